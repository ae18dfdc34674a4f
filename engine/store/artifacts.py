"""The store's protocol for reading artifact rows (their files are the engine's artifact store's)."""

from __future__ import annotations

from typing import Protocol

from engine.model import Artifact, ArtifactFilter


class ArtifactReads(Protocol):
    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]: ...

    async def get_artifact(self, artifact_id: str) -> Artifact | None: ...
