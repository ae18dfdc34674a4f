"""Files in containers, through the archive API (which works on stopped containers too): copying an
artifact out, following symlinks only inside the working directory, and globbing names."""

from __future__ import annotations

import itertools
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from engine.runners.base import FetchError
from engine.runners.docker_errors import explain

#: how many symlinks a fetched path may go through
MAX_LINKS = 16


class Missing(Exception):
    """The path is not in this container."""


def inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def container_workdir(container: Container) -> str:
    return (container.attrs.get("Config") or {}).get("WorkingDir") or "/"


def fetch_file(container: Container, joined: str, base: str, path: str, dest: Path) -> str:
    """Copy `joined` out of `container` into `dest`, following symlinks only inside `base`."""
    current = joined
    for _ in range(MAX_LINKS):
        try:
            chunks, stat = container.get_archive(current)
        except docker.errors.NotFound as exc:
            raise Missing() from exc
        except docker.errors.APIError as exc:
            raise FetchError(f"cannot read artifact {path!r}: {explain(exc)}") from None
        target = stat.get("linkTarget") or ""
        resolved = (
            posixpath.normpath(posixpath.join(posixpath.dirname(current), target)) if target else current
        )
        if not inside(resolved, base):
            _close(chunks)
            raise FetchError(f"artifact path {path!r} escapes the working directory")
        if resolved != current:
            _close(chunks)
            current = resolved
            continue
        if stat.get("isDir"):
            _close(chunks)
            raise FetchError(f"artifact path {path!r} is a directory")
        _extract_one(chunks, path, dest)
        return current
    raise FetchError(f"artifact path {path!r}: too many symbolic links")


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _extract_one(chunks: Iterator[bytes], path: str, dest: Path) -> None:
    """Write the one regular file of a tar stream to `dest` (through a temporary file: the tar may be large)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dest.parent) as spool:
            for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as archive:
                member = archive.next()
                if member is None or not member.isfile():
                    raise FetchError(f"artifact path {path!r} is not a regular file")
                source = archive.extractfile(member)
                assert source is not None
                with source, open(dest, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (OSError, tarfile.TarError, docker.errors.DockerException) as exc:
        raise FetchError(f"cannot copy artifact {path!r}: {exc}") from None


_GLOB_CHARS = re.compile(r"[*?\[]")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching relative paths as `pathlib.Path.glob(pattern)` does (`**` spans folders)."""
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append("(?:[^/]+/)*" if not last else "(?:[^/]+/)*[^/]+")
            continue
        out.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = segment[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_files(container: Container, pattern: str, base: str) -> list[str]:
    """Files under `base` in `container` matching `pattern`: reads the archive of the pattern's
    fixed leading folder (`reports` of `reports/**/*.xml`) and matches the names in it."""
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    fixed = list(itertools.takewhile(lambda part: not _GLOB_CHARS.search(part) and part != "**", parts))
    if len(fixed) == len(parts):
        fixed = fixed[:-1]  # no wildcard: the last part is the file itself
    root = posixpath.normpath(posixpath.join(base, *fixed)) if fixed else base
    if not inside(root, base):
        return []
    regex = glob_regex("/".join(parts))
    try:
        chunks, stat = container.get_archive(root)
    except docker.errors.NotFound:
        return []
    except docker.errors.APIError as exc:
        raise FetchError(f"cannot list {pattern!r}: {explain(exc)}") from None
    if not stat.get("isDir"):
        _close(chunks)
        return []
    # The archive's names start with the folder's own name.
    top = posixpath.basename(root.rstrip("/")) or "."
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    with tempfile.TemporaryFile() as spool:
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:") as archive:
            for member in archive:
                name = posixpath.normpath(member.name)
                if name != top and not name.startswith(top + "/"):
                    continue
                absolute = (
                    posixpath.normpath(posixpath.join(posixpath.dirname(root), name))
                    if top != "."
                    else posixpath.normpath(posixpath.join(root, name))
                )
                relative = posixpath.relpath(absolute, base)
                if member.isfile():
                    files[absolute] = relative
                elif member.issym():
                    links[absolute] = posixpath.normpath(
                        posixpath.join(posixpath.dirname(absolute), member.linkname)
                    )
    matches = {relative for relative in files.values() if regex.match(relative)}
    for link, target in links.items():
        relative = posixpath.relpath(link, base)
        for _ in range(MAX_LINKS):
            if target not in links:
                break
            target = links[target]
        if target in files and inside(target, base) and regex.match(relative):
            matches.add(relative)
    return sorted(matches)
