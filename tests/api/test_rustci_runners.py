"""The RustCI runner API: registration, list, detail, update, delete, restart survival, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api.rustci_helpers import RustciApi, rc, rustci_api

__all__ = ["rc"]


async def test_register_list_get_update(rc: RustciApi) -> None:
    status, body = await rc.call("POST", "/api/runners/register", json={
        "name": "my-docker-runner", "type": "docker", "host": "localhost", "port": 8081,
        "capabilities": ["docker", "isolation", "deployment"],
        "metadata": {"os": "linux", "arch": "amd64", "docker_version": "24.0.0", "max_concurrent_jobs": 5},
        "tags": ["production", "docker"], "resources": {"cpu_cores": 4, "memory_gb": 8, "disk_gb": 100}})
    assert status == 201 and body["success"] is True
    assert body["runner_id"].startswith("runner_") and body["registration_token"].startswith("reg_token_")
    docker_id = body["runner_id"]
    native_id = await rc.register("native-1", "native", tags=["staging"])
    status, page = await rc.call("GET", "/api/runners?limit=1&offset=0")
    assert status == 200 and page["total_count"] == 2 and page["has_more"] is True and len(page["runners"]) == 1
    status, page = await rc.call("GET", "/api/runners?status=active&type=docker")
    assert [r["id"] for r in page["runners"]] == [docker_id]
    status, page = await rc.call("GET", "/api/runners?tags=production,docker")
    assert [r["id"] for r in page["runners"]] == [docker_id]
    status, page = await rc.call("GET", "/api/runners?tags=staging")
    assert [r["id"] for r in page["runners"]] == [native_id]
    status, runner = await rc.call("GET", f"/api/runners/{docker_id}")
    assert status == 200
    assert runner["name"] == "my-docker-runner" and runner["port"] == 8081
    assert runner["metadata"]["docker_version"] == "24.0.0" and runner["metadata"]["registered_at"]
    assert runner["resources"] == {"cpu_cores": 4, "memory_gb": 8, "disk_gb": 100}
    assert runner["statistics"]["total_jobs_executed"] == 0
    assert 0 <= runner["current_load"]["memory_usage"] <= 100
    status, config = await rc.call("GET", f"/api/runners/{docker_id}/config")
    assert config["configuration"]["max_concurrent_jobs"] == 5
    status, body = await rc.call("PUT", f"/api/runners/{docker_id}", json={
        "name": "updated-docker-runner", "capabilities": ["docker", "deployment"],
        "metadata": {"max_concurrent_jobs": 10}, "tags": ["production", "high-capacity"]})
    assert status == 200 and body == {"success": True, "message": "Runner updated successfully"}
    status, runner = await rc.call("GET", f"/api/runners/{docker_id}")
    assert runner["name"] == "updated-docker-runner" and runner["capabilities"] == ["docker", "deployment"]
    assert runner["tags"] == ["production", "high-capacity"] and runner["metadata"]["os"] == "linux"
    status, config = await rc.call("GET", f"/api/runners/{docker_id}/config")
    assert config["configuration"]["max_concurrent_jobs"] == 10


async def test_post_api_runners_registers_too_and_kubernetes_is_not_supported(rc: RustciApi) -> None:
    status, body = await rc.call("POST", "/api/runners", json={"name": "n", "type": "local"})
    assert status == 201 and body["runner_id"].startswith("runner_")
    status, body = await rc.call("POST", "/api/runners/register", json={"name": "k", "type": "kubernetes"})
    assert status == 422 and body["success"] is False
    assert "not supported yet" in body["error"]["message"] and body["error"]["code"] == "INVALID_REQUEST"


async def test_documented_error_body(rc: RustciApi) -> None:
    status, body = await rc.call("GET", "/api/runners/runner_123")
    assert status == 404
    assert body["success"] is False and body["error"]["code"] == "RUNNER_NOT_FOUND"
    assert body["error"]["message"] == "Runner with ID 'runner_123' not found"
    assert body["error"]["details"]["runner_id"] == "runner_123" and body["error"]["details"]["timestamp"]
    status, body = await rc.call("POST", "/api/runners/register", json={"type": "docker"})
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST" and "name" in body["error"]["message"]
    status, body = await rc.call("GET", "/api/runners?limit=0")
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"


async def test_runners_survive_a_restart(engine: Any, tmp_path: Path) -> None:
    async with rustci_api(engine, tmp_path) as api:
        runner_id = await api.register("kept", "native")
        await api.call("PUT", f"/api/runners/{runner_id}/config", json={"max_concurrent_jobs": 3})
    async with rustci_api(engine, tmp_path) as api:
        status, runner = await api.call("GET", f"/api/runners/{runner_id}")
        assert status == 200 and runner["name"] == "kept"
        status, config = await api.call("GET", f"/api/runners/{runner_id}/config")
        assert config["configuration"]["max_concurrent_jobs"] == 3


async def test_every_route_is_in_the_openapi_document(rc: RustciApi) -> None:
    status, doc = await rc.call("GET", "/api/openapi.json")
    assert status == 200
    paths = doc["paths"]
    for path, method in [("/api/runners/register", "post"), ("/api/runners", "post"), ("/api/runners", "get"),
                         ("/api/runners/{runner_id}", "delete"), ("/api/runners/{runner_id}/jobs", "post"),
                         ("/api/runners/{runner_id}/logs", "get"), ("/api/runners/bulk", "post"),
                         ("/api/runners/{runner_id}/config", "put"), ("/api/runners/{runner_id}/metrics", "get"),
                         ("/api/runners/ws", "get")]:
        assert method in paths[path], (path, method)


async def test_without_a_token_it_is_refused_in_the_documented_body(rc: RustciApi) -> None:
    async with rc.session.get(rc.base + "/api/runners") as resp:
        body = await resp.json()
    assert resp.status == 401 and body["error"]["code"] == "AUTHENTICATION_REQUIRED"
