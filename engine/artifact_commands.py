"""The engine's artifact commands (what the API uploads, reads and deletes), as a part of
`engine.engine.Engine`: each change is published, then stored before it is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import NotFound
from engine.events import ArtifactAdded, ArtifactDeleted
from engine.model import Artifact, ArtifactType

if TYPE_CHECKING:
    from engine.artifacts import ArtifactStore
    from engine.hub import Hub
    from engine.model import Execution, Step
    from engine.store import Store
    from engine.store_writer import StoreWriter


class ArtifactCommands:
    """Mixed into `Engine`, whose store, hub, writer, artifact files and live reads it uses."""

    store: Store
    hub: Hub
    writer: StoreWriter
    artifacts: ArtifactStore

    if TYPE_CHECKING:
        @property
        def running_count(self) -> int: ...

        async def get_execution(self, execution_id: str) -> Execution | None: ...

        async def get_steps(self, execution_id: str) -> list[Step]: ...

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
    ) -> Artifact:
        if await self.get_execution(execution_id) is None:
            raise NotFound(f"no execution {execution_id}")
        if step_id is not None and not any(s.id == step_id for s in await self.get_steps(execution_id)):
            raise NotFound(f"no step {step_id} in execution {execution_id}")
        artifact = await self.artifacts.save_bytes(
            execution_id=execution_id, step_id=step_id, name=name, file_name=file_name, data=data,
            description=description, artifact_type=artifact_type, tags=list(tags),
        )
        await self.hub.publish(ArtifactAdded(artifact))
        await self.writer.barrier()
        return artifact

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        artifact = await self.store.get_artifact(artifact_id)
        if artifact is None and self.running_count:
            # told by an ArtifactAdded event that the store writer has not committed yet: once it
            # has written what was published so far, the store has every artifact anyone was told of
            await self.writer.barrier()
            artifact = await self.store.get_artifact(artifact_id)
        return artifact

    def artifact_path(self, artifact: Artifact) -> Path:
        return self.artifacts.path_of(artifact)

    async def read_artifact(self, artifact_id: str) -> bytes:
        artifact = await self.get_artifact(artifact_id)
        if artifact is None:
            raise NotFound(f"no artifact {artifact_id}")
        path = self.artifacts.path_of(artifact)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"the file of artifact {artifact_id} is missing") from None

    async def delete_artifact(self, artifact_id: str) -> None:
        artifact = await self.store.get_artifact(artifact_id)
        if artifact is None:
            raise NotFound(f"no artifact {artifact_id}")
        await self.hub.publish(ArtifactDeleted(exec_id=artifact.execution_id, artifact_id=artifact_id))
        await self.writer.barrier()
        await self.artifacts.remove(artifact)
