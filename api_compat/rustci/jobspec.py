"""A RustCI job as a stepflow workflow: its `steps[]` in order (each needs the one before), the
runner as the workflow's one target (docker, local, ssh), the runner's limits applied."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from api_compat.rustci.wire import RunnerJobRequest

DEFAULT_IMAGE = "ubuntu:latest"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "")


async def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def docker_endpoint(runner: dict[str, Any]) -> str | None:
    """The Docker API a docker runner talks to: `tcp://host:port`, or (None) DOCKER_HOST / the local
    socket when the host is this machine and nothing answers on the port; ours: `metadata.docker_host`."""
    given = (runner.get("metadata") or {}).get("docker_host")
    if isinstance(given, str) and given:
        return given
    host, port = str(runner.get("host") or ""), runner.get("port")
    if port is None:
        return None if host in _LOCAL_HOSTS else f"tcp://{host}:2375"
    if host in _LOCAL_HOSTS and not await port_answers(host or "127.0.0.1", int(port)):
        return None
    return f"tcp://{host}:{port}"


def cpus_of(limit: str | None) -> float | None:
    if not limit:
        return None
    return float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)


def memory_of(limit: str | None) -> str | None:
    """"4Gi" → "4g", "512Mi" → "512m" (Docker's units)."""
    if not limit:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGkmg])?i?[bB]?", limit)
    if match is None:
        return None
    number, unit = match.groups()
    return f"{number}{(unit or 'b').lower()}"


def target_of(runner: dict[str, Any], docker_host: str | None) -> dict[str, Any]:
    kind = runner["type"]
    config = runner.get("config") or {}
    if kind == "docker":
        docker = config.get("docker_config") or {}
        limits = config.get("resource_limits") or {}
        target: dict[str, Any] = {"type": "docker",
                                  "image": docker.get("image") or os.environ.get("STEPFLOW_RUSTCI_IMAGE")
                                  or DEFAULT_IMAGE}
        if docker_host:
            target["docker_host"] = docker_host
        if docker.get("volumes"):
            target["volumes"] = list(docker["volumes"])
        if (cpus := cpus_of(limits.get("cpu_limit"))) is not None:
            target["cpus"] = cpus
        if (memory := memory_of(limits.get("memory_limit"))) is not None:
            target["memory"] = memory
        return target
    if kind == "ssh":
        meta = runner.get("metadata") or {}
        target = {"type": "ssh", "host": runner.get("host") or "localhost"}
        if runner.get("port"):
            target["port"] = runner["port"]
        for key in ("user", "key", "known_hosts", "trust_on_first_use"):
            if key in meta:
                target[key] = meta[key]
        return target
    return {"type": "local"}


def step_names(job: RunnerJobRequest) -> list[str]:
    """The steps' names, made unique (a second "build" is "build-2")."""
    seen: dict[str, int] = {}
    names = []
    for step in job.steps:
        count = seen[step.name] = seen.get(step.name, 0) + 1
        names.append(step.name if count == 1 else f"{step.name}-{count}")
    return names


def workflow_text(job: RunnerJobRequest, runner: dict[str, Any], docker_host: str | None, workdir: Path) -> str:
    """The workflow (JSON, which YAML reads) that runs `job` on `runner`."""
    target_name = "runner"
    # the job's timeout is the whole job's (api_compat.rustci.activity cancels it)
    defaults: dict[str, Any] = {"retries": job.retry_count}
    if runner["type"] == "docker":
        defaults["shell"] = "sh"
    elif runner["type"] in ("local", "native"):
        defaults["cwd"] = str(workdir)
    names = step_names(job)
    steps = []
    for i, (name, step) in enumerate(zip(names, job.steps, strict=True)):
        entry: dict[str, Any] = {"name": name, "run": step.run}
        if i:
            entry["needs"] = [names[i - 1]]
        steps.append(entry)
    doc = {"name": job.name, "env": dict(job.environment), "targets": {target_name: target_of(runner, docker_host)},
           "runs_on": target_name, "defaults": defaults, "steps": steps, "max_parallel": 1}
    return json.dumps(doc)
