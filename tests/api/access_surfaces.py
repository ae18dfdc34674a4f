"""Two small API surfaces declared the way OpsConductor's and RustCI's will be (their routes are not
on this branch), served with the real application from `create_app` on loopback.

- `ops`: a Bearer JWT on every route even with the listener's auth off, a route for administrators,
  every route limited per user (5/minute standard, 8/minute administrator), errors as
  `{"error": code, "message": ...}`.
- `runners`: a credential when the listener's auth is on, `X-API-Key` accepted, categories as the
  RustCI document has them (registration per IP, status and jobs per runner, bulk per user), errors
  as `{"success": false, "error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from api_compat import create_app
from api_compat.access import (
    AUTH_THROTTLED,
    AUTHENTICATION_REQUIRED,
    FORBIDDEN,
    PRINCIPAL,
    RATE_LIMITED,
    Denial,
)
from api_compat.config import ApiConfig
from api_compat.error_middleware import error_middleware
from api_compat.rate_limits import RateCategory, RatePolicy
from api_compat.state import SURFACES
from api_compat.surface import Surface, route


class OpsError(BaseModel):
    error: str
    message: str


class RunnerErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class RunnerError(BaseModel):
    success: bool
    error: RunnerErrorDetail


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


_OPS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}


def ops_fail(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": _OPS_CODES.get(status, "internal_error"), "message": message}, status, headers)


_RUNNER_CODES = {AUTHENTICATION_REQUIRED: "AUTHENTICATION_REQUIRED", AUTH_THROTTLED: "RATE_LIMIT_EXCEEDED",
                 RATE_LIMITED: "RATE_LIMIT_EXCEEDED", FORBIDDEN: "AUTHORIZATION_FAILED"}


def runner_fail(message: str, status: int, headers: dict[str, str] | None = None,
                code: str = "INVALID_REQUEST", details: dict[str, Any] | None = None) -> web.Response:
    if status >= 500:
        code = "INTERNAL_ERROR"
    return _json({"success": False, "error": {"code": code, "message": message, "details": details or {}}},
                 status, headers)


def runner_denied(denial: Denial) -> web.Response:
    details: dict[str, Any] = {}
    if denial.required_role:
        details["required_role"] = denial.required_role
    if denial.rate is not None:
        details["limit"] = denial.rate.limit
    return runner_fail(denial.message, denial.status, denial.headers, _RUNNER_CODES[denial.kind], details)


async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return web.json_response({"user": principal.user, "role": principal.role, "via": principal.via})


async def streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_type = "text/plain"
    await response.prepare(request)
    await response.write(b"one\ntwo\n")
    await response.write_eof()
    return response


#: small numbers, for tests that go past them
SMALL_OPS_POLICY = RatePolicy({"requests": RateCategory("5/minute", by="user",
                                                        role_limits={"administrator": "8/minute"})},
                              default="requests")


def ops_surface(policy: RatePolicy = SMALL_OPS_POLICY) -> Surface:
    return Surface(
        name="ops", title="Test ops", error_model=OpsError, prefixes=("/api/testops",), refusal=ops_fail,
        auth_always=True, rate_policy=policy,
    )


def runners_surface() -> Surface:
    return Surface(
        name="runners", title="Test runners", error_model=RunnerError, prefixes=("/api/testrunners",),
        refusal=runner_fail, api_key=True,
        rate_policy=RatePolicy({
            "registration": RateCategory("3/minute", by="ip"),
            "status": RateCategory("4/minute", by="path:runner_id", description="per runner"),
            "jobs": RateCategory("3/minute", by="path:runner_id", description="per runner"),
            "bulk": RateCategory("2/minute", by="user"),
        }),
    )


def install_test_surfaces(app: web.Application, ops_policy: RatePolicy = SMALL_OPS_POLICY) -> tuple[Surface, Surface]:
    """Both surfaces on `app` (made by `create_app`, not yet started), as `create_app` installs a
    real one."""
    ops, runners = ops_surface(ops_policy), runners_surface()
    app[SURFACES][:0] = [ops, runners]
    r = app.router
    route(r, ops, "GET", "/api/testops/whoami", whoami, "Who am I", "ops")
    route(r, ops, "POST", "/api/testops/things", whoami, "Create a thing", "ops", role="administrator")
    route(r, ops, "DELETE", "/api/testops/things/{thing_id}", whoami, "Delete a thing", "ops",
          role="administrator", errors=(404,))
    route(r, ops, "GET", "/api/testops/stream", streamed, "A streamed answer", "ops",
          response={"description": "text", "content": {"text/plain": {}}})
    route(r, runners, "POST", "/api/testrunners/register", whoami, "Register", "runners", rate_limit="registration")
    route(r, runners, "GET", "/api/testrunners", whoami, "List", "runners")
    route(r, runners, "GET", "/api/testrunners/{runner_id}/status", whoami, "Status", "runners", rate_limit="status")
    route(r, runners, "POST", "/api/testrunners/{runner_id}/jobs", whoami, "Submit a job", "runners",
          rate_limit="jobs")
    route(r, runners, "POST", "/api/testrunners/bulk", whoami, "Bulk", "runners", rate_limit="bulk",
          role="administrator")
    # after the cross-site middleware (outermost); each surface's acts on its own requests only
    app.middlewares.append(error_middleware(ops, ops_fail, validation=lambda exc: ops_fail(str(exc), 422)))
    app.middlewares.append(error_middleware(runners, runner_fail,
                                               validation=lambda exc: runner_fail(str(exc), 400),
                                               denied=runner_denied))
    return ops, runners


@contextlib.asynccontextmanager
async def serving(engine: Any, config: ApiConfig, ops_policy: RatePolicy = SMALL_OPS_POLICY) -> AsyncIterator[str]:
    """The real application with the test surfaces on a loopback port; yields its base URL."""
    app = create_app(engine, config=config)
    install_test_surfaces(app, ops_policy)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def bearer(token: str) -> dict[str, str]:
    """The header of a Bearer credential."""
    return {"Authorization": f"Bearer {token}"}


async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """The status, JSON body and headers of one request."""
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers
