"""The document's pagination: `page`, `per_page` in, the `pagination` block out."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.opsconductor.errors import OpsError
from api_compat.query_params import QueryParams

MAX_PER_PAGE = 100


class PageQuery(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(20, ge=1, le=MAX_PER_PAGE)


def page_of(request: web.Request) -> tuple[int, int]:
    q = QueryParams(request.query, error=OpsError)
    return (q.integer("page", 1, minimum=1, maximum=1_000_000),
            q.integer("per_page", 20, minimum=1, maximum=MAX_PER_PAGE))


def pagination(page: int, per_page: int, total: int) -> dict[str, Any]:
    pages = (total + per_page - 1) // per_page
    return {"page": page, "per_page": per_page, "total": total, "pages": pages,
            "has_next": page < pages, "has_prev": page > 1}
