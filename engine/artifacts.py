"""The artifact store: files copied under the data directory, described by type, size and checksum."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import re
import shutil
from pathlib import Path, PurePosixPath

from engine.model import Artifact, ArtifactType, new_id, utcnow

_ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".whl", ".jar"}
_DATA_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".xml", ".yaml", ".yml",
                  ".sqlite", ".db", ".npy", ".npz", ".pkl", ".h5", ".arrow", ".feather"}
_DOCUMENT_SUFFIXES = {".txt", ".md", ".rst", ".html", ".htm", ".pdf", ".doc", ".docx", ".odt", ".rtf", ".tex"}
_LOG_SUFFIXES = {".log", ".out", ".err", ".trace"}


def classify(file_name: str, mime_type: str) -> ArtifactType:
    suffix = PurePosixPath(file_name.lower()).suffix
    if suffix in _LOG_SUFFIXES:
        return ArtifactType.LOG
    if mime_type.startswith("image/"):
        return ArtifactType.IMAGE
    if suffix in _ARCHIVE_SUFFIXES:
        return ArtifactType.ARCHIVE
    if suffix in _DATA_SUFFIXES:
        return ArtifactType.DATA
    if suffix in _DOCUMENT_SUFFIXES or mime_type.startswith("text/"):
        return ArtifactType.DOCUMENT
    return ArtifactType.OTHER


def guess_mime(file_name: str) -> str:
    mime, _ = mimetypes.guess_type(file_name)
    if mime:
        return mime
    suffix = PurePosixPath(file_name.lower()).suffix
    if suffix in _LOG_SUFFIXES or suffix in {".md", ".rst"}:
        return "text/plain"
    return "application/octet-stream"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_file_name(name: str) -> str:
    """A file name that cannot leave its folder: the last path part, odd characters replaced."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).strip("._") or "artifact"
    return base[:200]


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder_for(self, execution_id: str, artifact_id: str) -> Path:
        return self.root / execution_id / artifact_id

    async def describe(
        self,
        *,
        artifact_id: str,
        execution_id: str,
        step_id: str | None,
        stored: Path,
        name: str,
        description: str = "",
        artifact_type: ArtifactType | None = None,
        tags: list[str] | None = None,
    ) -> Artifact:
        sha, size = await asyncio.to_thread(_sha256_and_size, stored)
        mime = guess_mime(stored.name)
        return Artifact(
            id=artifact_id,
            execution_id=execution_id,
            step_id=step_id,
            name=name,
            file_name=stored.name,
            file_path=str(stored),
            file_size=size,
            mime_type=mime,
            artifact_type=artifact_type or classify(stored.name, mime),
            sha256=sha,
            description=description,
            created_at=utcnow(),
            tags=list(tags or []),
        )

    async def save_bytes(
        self,
        *,
        execution_id: str,
        step_id: str | None,
        name: str,
        file_name: str,
        data: bytes,
        description: str = "",
        artifact_type: ArtifactType | None = None,
        tags: list[str] | None = None,
    ) -> Artifact:
        artifact_id = new_id()
        folder = self.folder_for(execution_id, artifact_id)
        stored = folder / safe_file_name(file_name)
        await asyncio.to_thread(_write, stored, data)
        return await self.describe(
            artifact_id=artifact_id, execution_id=execution_id, step_id=step_id, stored=stored,
            name=name, description=description, artifact_type=artifact_type, tags=tags,
        )

    def path_of(self, artifact: Artifact) -> Path:
        """The stored file, checked to lie inside the artifact folder."""
        path = Path(artifact.file_path).resolve()
        root = self.root.resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"artifact {artifact.id} points outside the artifact store")
        return path

    async def remove_execution(self, execution_id: str) -> None:
        folder = self.root / execution_id
        if folder.is_dir():
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def remove(self, artifact: Artifact) -> None:
        folder = self.folder_for(artifact.execution_id, artifact.id)
        if folder.is_dir():
            await asyncio.to_thread(shutil.rmtree, folder, True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
