"""StepFlow Monitor's errors: reading bodies and query parameters into its 400s, and its
`SurfaceErrors` (`api_compat.error_middleware`), set to answer in its envelope, with a workflow
error 400 and `?token=` accepted on a WebSocket upgrade."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api_compat.error_middleware import SurfaceErrors
from api_compat.monitor.envelope import ApiError, fail
from api_compat.request_parsing import REQUIRED, read_json_body

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

def _workflow_error() -> type[Exception] | None:
    try:
        from engine.workflow.load import WorkflowError
    except ImportError:  # pragma: no cover - until the workflow module lands
        return None
    return WorkflowError


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


async def read_json(request: web.Request, model: type[M], *, optional: bool = False) -> tuple[M, list[str]]:
    """The body validated against `model` (400 when it is not JSON or does not fit, the field
    named), and a warning for each unknown field, which is ignored rather than refused."""
    payload = await read_json_body(request, empty={} if optional else REQUIRED)
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = [key for key in payload if key not in model.model_fields]
    try:
        body = model.model_validate({k: v for k, v in payload.items() if k not in unknown})
    except ValidationError as exc:
        raise ApiError(400, describe_validation(exc)) from None
    # a key is echoed back at most 100 characters long: the body may be up to 1 MiB
    return body, [f"unknown field {key[:100]!r} ignored" for key in unknown]


def read_query(request: web.Request, model: type[M]) -> M:
    """Query parameters validated against `model` (400 when they do not fit). A field typed as a
    list takes every occurrence of its parameter; any other, given twice, is refused."""
    values: dict[str, Any] = {}
    for key in request.query.keys():
        field = model.model_fields.get(key)
        if field is None:
            continue
        given = request.query.getall(key)
        if "list" in str(field.annotation):
            values[key] = given
        elif len(given) > 1:
            raise ApiError(400, f"invalid query parameters: {key}: given more than once")
        else:
            values[key] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(400, "invalid query parameters: " + describe_validation(exc)) from None


def surface_errors() -> SurfaceErrors:
    return SurfaceErrors(fail, validation=lambda exc: fail(describe_validation(exc), 400),
                         client_error=_workflow_error(), query_token_on_upgrade=True)
