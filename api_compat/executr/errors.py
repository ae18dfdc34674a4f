"""The executr error body (`{"error": message, "context": {...}}`) and its `SurfaceErrors`
(`api_compat.error_middleware`), set to answer every failure in that body. Where the reference answers
500 or drops the connection (a malformed id, cancelling a running job, a report from an executor
that does not hold the job), this answers the documented 400/404, or 409 for the wrong executor."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api_compat.error_middleware import SurfaceErrors
from api_compat.request_parsing import RequestRefused, describe_fields
from engine.errors import EngineError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str
    context: dict[str, Any] | None = None


class ExecutrError(RequestRefused):
    """A refusal in executr's error body, with its context."""

    def __init__(self, status: int, message: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(status, message)
        self.context = context


def fail(message: str, status: int, headers: dict[str, str] | None = None,
         context: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if context:
        body["context"] = context
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def describe_validation(exc: ValidationError) -> tuple[str, dict[str, Any]]:
    message, fields = describe_fields(exc)
    return message, {"fields": fields}


def refuse_body(message: str, fields: list[str]) -> ExecutrError:
    """executr's 400 for a body that does not validate (`request_parsing.validate_object`)."""
    return ExecutrError(400, message, {"fields": fields} if fields else None)


def _validation(exc: ValidationError) -> web.Response:
    message, context = describe_validation(exc)
    return fail(message, 400, context=context)


def _refused(exc: RequestRefused) -> web.Response:
    return fail(exc.message, exc.status, context=exc.context if isinstance(exc, ExecutrError) else None)


def _engine(request: web.Request, exc: EngineError, status: int) -> web.Response:
    context = {"job_id": request.match_info["job_id"]} if "job_id" in request.match_info else None
    return fail(exc.message, status, context=context)


def surface_errors() -> SurfaceErrors:
    return SurfaceErrors(fail, validation=_validation, refused=_refused, engine=_engine)
