"""A runner as the API answers it: the list's and the detail's fields, its statistics (from its
jobs' history), status, health (real checks) and metrics (the sampled series)."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from api_compat.rustci.activity import Activity, Sample
from api_compat.rustci.desk import RunnerDesk
from api_compat.rustci.jobs_view import duration
from api_compat.rustci.jobspec import docker_endpoint
from api_compat.rustci.wire import rfc3339
from engine.model import Execution, ExecutionStatus
from engine.store import RegistryEntry

PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
RESOLUTIONS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
#: below these, the health check fails
MIN_DISK_GB = 1.0
MIN_MEMORY_GB = 0.25


def _load(desk: RunnerDesk, data: dict[str, Any], *, disk: bool) -> dict[str, Any]:
    sample = desk.activity.samples.get(data["id"])
    last: Sample | None = sample[-1] if sample else None
    load: dict[str, Any] = {"active_jobs": desk.running_count(data["id"]),
                            "cpu_usage": last.cpu if last else psutil.cpu_percent(None),
                            "memory_usage": last.memory if last else psutil.virtual_memory().percent}
    if disk:
        load["disk_usage"] = psutil.disk_usage(str(desk.data_dir)).percent
    return load


def _meta(data: dict[str, Any], *, full: bool) -> dict[str, Any]:
    meta = dict(data.get("metadata") or {})
    meta["last_seen"] = data.get("last_seen")
    if full:
        meta["registered_at"] = data.get("registered_at")
    return meta


def runner_json(desk: RunnerDesk, entry: RegistryEntry, *, full: bool = False) -> dict[str, Any]:
    data = entry.data
    return {"id": entry.name, "name": data["name"], "type": data["type"], "status": data["status"],
            "host": data.get("host"), "port": data.get("port"), "capabilities": data.get("capabilities") or [],
            "metadata": _meta(data, full=full), "tags": data.get("tags") or [],
            "resources": data.get("resources") or {}, "current_load": _load(desk, data, disk=full)}


def statistics(data: dict[str, Any], jobs: list[Execution]) -> dict[str, Any]:
    ended = [e for e in jobs if e.status.is_terminal]
    durations = [d for e in ended if (d := duration(e)) is not None]
    registered = datetime.fromisoformat(str(data["registered_at"]).replace("Z", "+00:00"))
    lifetime = max((datetime.now(UTC) - registered).total_seconds(), 1e-9)
    inactive = float(data.get("inactive_seconds") or 0)
    if data.get("stopped_at"):
        stopped = datetime.fromisoformat(str(data["stopped_at"]).replace("Z", "+00:00"))
        inactive += max((datetime.now(UTC) - stopped).total_seconds(), 0.0)
    return {"total_jobs_executed": len(ended),
            "successful_jobs": sum(1 for e in ended if e.status is ExecutionStatus.COMPLETED),
            "failed_jobs": sum(1 for e in ended if e.status is ExecutionStatus.FAILED),
            # ours: cancelled ones are neither
            "cancelled_jobs": sum(1 for e in ended if e.status is ExecutionStatus.CANCELLED),
            "average_execution_time": round(sum(durations) / len(durations), 3) if durations else 0.0,
            "uptime_percentage": round(max(0.0, min(100.0, 100.0 * (1 - inactive / lifetime))), 1)}


async def detail(desk: RunnerDesk, entry: RegistryEntry) -> dict[str, Any]:
    answer = runner_json(desk, entry, full=True)
    answer["statistics"] = statistics(entry.data, await desk.jobs(entry))
    answer["configuration"] = entry.data.get("config") or {}  # ours: what GET .../config answers
    return answer


# -- health -----------------------------------------------------------------------------------------
async def _docker_check(data: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The daemon's ping and version (docker SDK, in a thread)."""
    endpoint = await docker_endpoint(data)

    def ping() -> dict[str, Any]:
        import docker

        client = docker.DockerClient(base_url=endpoint, timeout=5) if endpoint else docker.from_env(timeout=5)
        try:
            client.ping()
            return {"status": "pass", "version": client.version().get("Version", "")}
        finally:
            client.close()

    started = time.monotonic()
    try:
        check = await asyncio.wait_for(asyncio.to_thread(ping), 10)
    except Exception as exc:
        check = {"status": "fail", "error": str(exc)[:300]}
    return check, (time.monotonic() - started) * 1000


def _machine_checks(data_dir: Path) -> dict[str, Any]:
    disk = shutil.disk_usage(data_dir)
    free_gb = disk.free / 1e9
    memory_gb = psutil.virtual_memory().available / 1e9
    return {"disk_space": {"status": "pass" if free_gb >= MIN_DISK_GB else "fail", "available_gb": round(free_gb, 1)},
            "memory": {"status": "pass" if memory_gb >= MIN_MEMORY_GB else "fail",
                       "available_gb": round(memory_gb, 1)}}


async def health(desk: RunnerDesk, entry: RegistryEntry) -> dict[str, Any]:
    data = entry.data
    checks: dict[str, Any] = {}
    if data["type"] == "docker":
        daemon, took = await _docker_check(data)
        checks["connectivity"] = {"status": daemon["status"], "response_time_ms": round(took)}
        checks["docker_daemon"] = daemon
    elif data["type"] == "ssh":
        from api_compat.rustci.jobspec import port_answers

        started = time.monotonic()
        ok = await port_answers(str(data.get("host") or "localhost"), int(data.get("port") or 22), 5.0)
        checks["connectivity"] = {"status": "pass" if ok else "fail",
                                  "response_time_ms": round((time.monotonic() - started) * 1000)}
    else:
        checks["connectivity"] = {"status": "pass", "response_time_ms": 0}
    checks.update(await asyncio.to_thread(_machine_checks, desk.data_dir))
    failed = [name for name, check in checks.items() if check["status"] != "pass"]
    state = "healthy" if not failed else ("unhealthy" if "connectivity" in failed or "docker_daemon" in failed
                                          else "degraded")
    return {"runner_id": entry.name, "health": state, "checks": checks, "last_check": rfc3339(datetime.now(UTC))}


def capabilities_status(data: dict[str, Any], health_state: str) -> dict[str, str]:
    available = "available" if data.get("status") == "active" and health_state != "unhealthy" else "unavailable"
    return {name: available for name in data.get("capabilities") or []}


async def status(desk: RunnerDesk, entry: RegistryEntry) -> dict[str, Any]:
    data = entry.data
    jobs = await desk.jobs(entry)
    load = _load(desk, data, disk=True)
    load["queued_jobs"] = sum(1 for e in jobs if e.status is ExecutionStatus.PENDING)
    checks = await asyncio.to_thread(_machine_checks, desk.data_dir)
    state = "healthy" if all(c["status"] == "pass" for c in checks.values()) else "degraded"
    if data.get("status") == "error":
        state = "unhealthy"
    return {"runner_id": entry.name, "status": data["status"], "health": state,
            "last_heartbeat": data.get("last_seen"), "current_load": load,
            "capabilities_status": capabilities_status(data, state)}


# -- metrics ----------------------------------------------------------------------------------------
def metrics(activity: Activity, entry: RegistryEntry, jobs: list[Execution], period: str, resolution: str) -> dict[str, Any]:
    span, step = PERIODS[period], RESOLUTIONS[resolution]
    end = datetime.now(UTC)
    start = end - span
    buckets: dict[int, list[Sample]] = {}
    for sample in activity.samples.get(entry.name, ()):
        if sample.at >= start:
            buckets.setdefault(int((sample.at - start) / step), []).append(sample)
    series: dict[str, list[dict[str, Any]]] = {"cpu_usage": [], "memory_usage": [], "active_jobs": []}
    for index in sorted(buckets):
        group = buckets[index]
        at = rfc3339(start + index * step)
        series["cpu_usage"].append({"timestamp": at, "value": round(sum(s.cpu for s in group) / len(group), 1)})
        series["memory_usage"].append({"timestamp": at, "value": round(sum(s.memory for s in group) / len(group), 1)})
        series["active_jobs"].append({"timestamp": at, "value": max(s.active_jobs for s in group)})
    cpu = [p["value"] for p in series["cpu_usage"]]
    mem = [p["value"] for p in series["memory_usage"]]
    executed = sum(1 for e in jobs if e.status.is_terminal and e.completed_at is not None and e.completed_at >= start)
    return {"runner_id": entry.name, "period": period, "resolution": resolution, "metrics": series,
            "summary": {"avg_cpu_usage": round(sum(cpu) / len(cpu), 1) if cpu else 0.0, "max_cpu_usage": max(cpu, default=0.0),
                        "avg_memory_usage": round(sum(mem) / len(mem), 1) if mem else 0.0,
                        "max_memory_usage": max(mem, default=0.0), "total_jobs_executed": executed}}
