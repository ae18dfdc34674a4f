"""The worker's binaries: downloaded once, verified by sha256, cached by hash in a folder with a
size bound, and run from a link in the job's own folder."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp


class JobError(Exception):
    """This job cannot run here; the message goes to the server as its error_message."""


class BinaryCache:
    """Binaries by sha256 in one folder: written to a temporary name, verified, then renamed, so a
    file under a hash's name always has that hash. Least recently used ones go past `max_bytes`.

    A job runs its binary from a hard link in its own folder (`place`), a copy where a link cannot
    be made: the cache's eviction (this worker's or another's on the same folder) may remove the
    cache's name at any time without touching what a job is about to start or runs. A file with
    such a link (more than one name) is in use and is not evicted."""

    def __init__(self, folder: Path, max_bytes: int, download_timeout: float) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.download_timeout = download_timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def get(self, url: str, sha256: str) -> Path:
        digest = sha256.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise JobError(f"binary_sha256 {sha256!r} is not 64 hexadecimal digits")
        path = self.folder / digest
        async with self._locks.setdefault(digest, asyncio.Lock()):
            if _touch(path):
                return path
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=f".{digest[:12]}-", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    got = await self._fetch(url, out)
                if got != digest:
                    raise JobError(f"binary sha256 mismatch for {url}: expected {digest}, downloaded file "
                                   f"has {got}; nothing was run")
                os.chmod(tmp, 0o755)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        self._evict(keep=path)
        return path

    async def place(self, url: str, sha256: str, dest: Path) -> None:
        """The binary, verified, at `dest` (a new name in a job's folder) to run from there."""
        for _ in range(3):
            cached = await self.get(url, sha256)
            try:
                await asyncio.to_thread(_link_or_copy, cached, dest)
            except FileNotFoundError:
                continue  # evicted between the download and the link: fetched again
            except OSError as exc:
                raise JobError(f"cannot place the binary in the job's folder: {exc.strerror or exc}") from None
            return
        raise JobError("the binary cache evicted the binary three times before it could run: "
                       "raise --cache-max-bytes")

    async def _fetch(self, url: str, out: object) -> str:
        """Copy the URL's bytes into `out` (a binary file); their sha256."""
        digest = hashlib.sha256()
        write = out.write  # type: ignore[attr-defined]
        parsed = urlparse(url)
        if parsed.scheme == "file":
            source = Path(unquote(parsed.path))

            def copy() -> None:
                with source.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        write(chunk)
            try:
                await asyncio.to_thread(copy)
            except OSError as exc:
                raise JobError(f"cannot read binary {url}: {exc.strerror or exc}") from None
            return digest.hexdigest()
        if parsed.scheme not in ("http", "https"):
            raise JobError(f"binary_url {url!r}: only http, https and file URLs are fetched")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.download_timeout):
                async with self._http.get(url) as resp:
                    if resp.status != 200:
                        raise JobError(f"downloading binary {url}: HTTP {resp.status} {resp.reason or ''}".rstrip())
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        digest.update(chunk)
                        write(chunk)
        except TimeoutError:
            raise JobError(f"downloading binary {url}: not done within {self.download_timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise JobError(f"downloading binary {url}: {exc or type(exc).__name__}") from None
        return digest.hexdigest()

    def _evict(self, keep: Path) -> None:
        try:
            files = [(st, p) for p in self.folder.iterdir() if not p.name.startswith(".")
                     and (st := _stat(p)) is not None and stat.S_ISREG(st.st_mode)]
        except OSError:
            return
        total = sum(st.st_size for st, _ in files)
        for st, p in sorted(files, key=lambda item: item[0].st_mtime):
            if total <= self.max_bytes:
                break
            if p != keep and st.st_nlink == 1:  # more names: a job's folder holds it to run
                with contextlib.suppress(OSError):
                    p.unlink()
                    total -= st.st_size


def _touch(path: Path) -> bool:
    """Whether the cached file is there (marked as just used)."""
    try:
        os.utime(path)
    except OSError:
        return False
    return True


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        with source.open("rb") as src, dest.open("wb") as out:  # another file system
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(dest, 0o755)
