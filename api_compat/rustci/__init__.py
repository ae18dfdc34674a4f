"""The RustCI runner API under /api/runners (specs/rustci-runner-api.md)."""
