"""A client of the executr job-queue API (`/api/v1`): what `stepflow worker` and the benchmark speak.

It works against `stepflow serve` and against the reference executr server. Where the two answer with
different success codes (the document says 200 for cancel, heartbeat, complete and fail; the reference
answers 204), both are accepted. Every other answer raises `ExecutrError` with the server's own
message; a server that cannot be reached raises `ExecutrUnavailable`.

`claim(wait=SECONDS)` asks for a long poll (`POST /api/v1/jobs/claim?wait=SECONDS`, stepflow's
extension): the server holds the request until a job is queued or the time is up. A server without
the extension ignores the parameter and answers 204 at once; `ClaimResult.waited` lets the caller see
that and poll instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

API = "/api/v1"
#: seconds to open a connection before the server counts as unreachable
CONNECT_TIMEOUT = 10.0
#: seconds an ordinary request may take (a long poll gets its wait on top)
REQUEST_TIMEOUT = 60.0

Job = dict[str, Any]


class ExecutrError(Exception):
    """The server answered, but not with success: `status`, its `error` text and `context`."""

    def __init__(self, method: str, path: str, status: int, message: str,
                 context: Mapping[str, Any] | None = None) -> None:
        self.method, self.path, self.status = method, path, status
        self.message = message
        self.context = dict(context or {})
        detail = f" ({', '.join(f'{k}={v}' for k, v in self.context.items())})" if self.context else ""
        super().__init__(f"{method} {path}: {status} {message}{detail}")


def lacks_route(exc: ExecutrError) -> bool:
    """Whether the answer says the server has no such route (404 or 405 not in executr's error body
    about a job: the reference answers `404 page not found` in plain text)."""
    if exc.status == 405 or exc.status == 501:
        return True
    return exc.status == 404 and "job_id" not in exc.context


class ExecutrUnavailable(Exception):
    """The server could not be reached, or did not answer in time."""


@dataclass(slots=True, frozen=True)
class ClaimResult:
    #: the claimed job, None when nothing was queued
    job: Job | None
    #: seconds the request took (a 204 much faster than the wait asked for: no long-poll support)
    elapsed: float


class ExecutrClient:
    """One connection pool to one executr server. Use as `async with ExecutrClient(url) as c:`."""

    def __init__(self, base_url: str, *, token: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, request_timeout: float = REQUEST_TIMEOUT,
                 connections: int = 100) -> None:
        base = base_url.rstrip("/")
        if base.endswith(API):  # `--server http://host:8080/api/v1` means the same server
            base = base[: -len(API)]
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"server URL {base_url!r}: write it as http://HOST:PORT or https://HOST:PORT")
        self.base_url = base
        self._token = token
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ExecutrClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout))
        return self._session

    async def _request(self, method: str, path: str, *, ok: Sequence[int], body: object = None,
                       params: Mapping[str, str] | None = None, timeout: float | None = None) -> tuple[int, Any]:
        url = f"{self.base_url}{API}{path}"
        # raw UTF-8, not \u escapes: a job's 1 MiB of output stays near 1 MiB on the wire
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with asyncio.timeout(timeout or self._request_timeout):
                async with self._http().request(method, url, data=data, headers=headers, params=params) as resp:
                    raw = await resp.read()
                    status = resp.status
        except TimeoutError:
            raise ExecutrUnavailable(f"{method} {url}: no answer within {timeout or self._request_timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ExecutrUnavailable(f"{method} {url}: {exc or type(exc).__name__}") from None
        payload: Any = None
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode("utf-8", "replace")
        if status not in ok:
            if isinstance(payload, dict) and isinstance(payload.get("error"), str):
                context = payload.get("context")
                raise ExecutrError(method, path, status, payload["error"],
                                   context if isinstance(context, dict) else None)
            text = payload if isinstance(payload, str) else (json.dumps(payload) if payload is not None else "")
            raise ExecutrError(method, path, status, text.strip()[:500] or _reason(status))
        return status, payload

    # -- jobs ------------------------------------------------------------------------------------------
    async def submit(self, job: Mapping[str, Any]) -> Job:
        """Queue a job (`type`, `binary_url`, `binary_sha256`, `priority`, optional `arguments` and
        `env_variables`); the answer holds its `id`."""
        _, payload = await self._request("POST", "/jobs", ok=(201, 200), body=dict(job))
        return _object(payload, "POST /jobs")

    async def submit_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Bulk submit (at most 100): one result per job; 206 (some failed) is an answer, not an error."""
        _, payload = await self._request("POST", "/jobs/bulk", ok=(201, 200, 206), body=[dict(j) for j in jobs])
        return payload if isinstance(payload, list) else []

    async def get(self, job_id: str) -> Job:
        _, payload = await self._request("GET", f"/jobs/{quote(job_id, safe='')}", ok=(200,))
        return _object(payload, "GET /jobs/{id}")

    async def list(self, *, status: str | None = None, type: str | None = None, priority: str | None = None,
                   limit: int | None = None, offset: int | None = None) -> list[Job]:
        params = {k: str(v) for k, v in (("status", status), ("type", type), ("priority", priority),
                                         ("limit", limit), ("offset", offset)) if v is not None}
        _, payload = await self._request("GET", "/jobs", ok=(200,), params=params)
        return list(payload or [])  # the reference answers `null` for no jobs

    async def cancel(self, job_id: str) -> None:
        await self._request("DELETE", f"/jobs/{quote(job_id, safe='')}", ok=(204, 200))

    # -- executors --------------------------------------------------------------------------------------
    async def claim(self, executor_id: str, executor_ip: str = "", *, wait: float | None = None) -> ClaimResult:
        """Claim the next job (None: nothing queued). `wait`: hold the request up to that many seconds
        for a job to arrive (stepflow's long poll; other servers answer at once)."""
        params = {"wait": f"{wait:g}"} if wait else None
        started = time.monotonic()
        status, payload = await self._request(
            "POST", "/jobs/claim", ok=(200, 204), body={"executor_id": executor_id, "executor_ip": executor_ip},
            params=params, timeout=self._request_timeout + (wait or 0))
        elapsed = time.monotonic() - started
        if status == 204 or not payload:
            return ClaimResult(None, elapsed)
        return ClaimResult(_object(payload, "POST /jobs/claim"), elapsed)

    async def heartbeat(self, job_id: str, executor_id: str) -> None:
        await self._request("PUT", f"/jobs/{quote(job_id, safe='')}/heartbeat", ok=(204, 200),
                            body={"executor_id": executor_id})

    async def complete(self, job_id: str, executor_id: str, *, stdout: str, stderr: str, exit_code: int = 0) -> None:
        await self._request("PUT", f"/jobs/{quote(job_id, safe='')}/complete", ok=(204, 200),
                            body={"executor_id": executor_id, "stdout": stdout, "stderr": stderr,
                                  "exit_code": exit_code})

    async def fail(self, job_id: str, executor_id: str, *, error_message: str, stdout: str = "",
                   stderr: str = "", exit_code: int = -1) -> None:
        await self._request("PUT", f"/jobs/{quote(job_id, safe='')}/fail", ok=(204, 200),
                            body={"executor_id": executor_id, "stdout": stdout, "stderr": stderr,
                                  "exit_code": exit_code, "error_message": error_message})

    async def output(self, job_id: str, executor_id: str, chunks: Sequence[Mapping[str, Any]], *,
                     timeout: float | None = None) -> None:
        """stepflow's extension: output of a running job, `chunks` of `{"stream", "offset", "text"}`
        (`POST /api/v1/jobs/{id}/output`). A server without it answers 404 (see `lacks_route`)."""
        await self._request("POST", f"/jobs/{quote(job_id, safe='')}/output", ok=(204, 200),
                            body={"executor_id": executor_id, "chunks": list(chunks)}, timeout=timeout)

    async def stats(self) -> dict[str, Any]:
        """`GET /api/v1/admin/stats`: jobs by status, pending by priority, active executors."""
        _, payload = await self._request("GET", "/admin/stats", ok=(200,))
        return _object(payload, "GET /admin/stats")

    async def health(self) -> dict[str, Any]:
        _, payload = await self._request("GET", "/health", ok=(200,))
        return _object(payload, "GET /health")


def _object(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        method, _, path = what.partition(" ")
        raise ExecutrError(method, path, 200, f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "unexpected answer"
