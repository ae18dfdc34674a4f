"""Typed application state shared by the surfaces, and what the listener needs of the engine.
Each surface's own keys are in its package (`api_compat.monitor.keys`...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from api_compat.config import ApiConfig
from api_compat.surface import Surface
from engine.client import EngineClient
from engine.jobs import Jobs
from engine.model import Artifact, ArtifactType
from engine.store import StoreStats

if TYPE_CHECKING:
    from api_compat.auth import TokenVerifier


class ServedEngine(EngineClient, Protocol):
    """`engine.engine.Engine`: the client interface plus what the health and artifact routes use."""

    data_dir: Path
    #: jobs worker processes claim (the executr API)
    jobs: Jobs

    async def stats(self) -> StoreStats: ...

    async def optimize(self) -> list[str]: ...

    async def cancel_and_delete(self, execution_id: str) -> bool: ...

    async def add_artifact(
        self,
        execution_id: str,
        *,
        name: str,
        file_name: str,
        data: bytes,
        step_id: str | None = None,
        description: str = "",
        artifact_type: ArtifactType | None = None,
        tags: Sequence[str] = (),
    ) -> Artifact: ...

    async def get_artifact(self, artifact_id: str) -> Artifact | None: ...

    async def delete_artifact(self, artifact_id: str) -> None: ...

    def artifact_path(self, artifact: Artifact) -> Path: ...


ENGINE = web.AppKey("engine", ServedEngine)
CONFIG = web.AppKey("config", ApiConfig)
SURFACES = web.AppKey("surfaces", list[Surface])
#: None when authentication is off
VERIFIER: web.AppKey[TokenVerifier | None] = web.AppKey("verifier")
#: what ends a surface's open streams (WebSockets, Server-Sent Events): the listener runs them all
#: when it stops, before it waits for the handlers (each also runs on the application's shutdown)
CLOSE_STREAMS = web.AppKey("close_streams", list[Callable[[], Awaitable[None]]])
#: time.monotonic() when the app was built, for uptime
STARTED_AT = web.AppKey("started_at", float)
