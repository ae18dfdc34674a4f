"""The OpsConductor API (specs/opsconductor-api.md) under /api beside StepFlow Monitor: targets,
jobs whose executions run on them with hierarchical serials, lookups by serial, analytics, and the
`/ws/executions` WebSocket. A job's execution is an ordinary execution of the engine (a workflow of
its actions, one branch per target), seen live in the TUI, `stepflow ls` and the Monitor API."""
