"""Helpers of the executr API tests: job bodies and calls."""

from __future__ import annotations

import hashlib
from typing import Any

SHA = hashlib.sha256(b"binary").hexdigest()


def job(job_type: str = "build", priority: str = "background", **extra: Any) -> dict[str, Any]:
    return {"type": job_type, "binary_url": "https://example.com/bin", "binary_sha256": SHA,
            "arguments": ["a", "b"], "env_variables": {"K": "v"}, "priority": priority, **extra}


def claim_body(executor: str = "worker-1", ip: str = "10.0.0.1") -> dict[str, str]:
    return {"executor_id": executor, "executor_ip": ip}
