"""API keys (`X-API-Key`, for the surfaces that accept one: RustCI's runner API).

`stepflow token create --api-key` calls `create_api_key`, which prints the key once: only its
SHA-256 is kept, in `api_keys` in the data directory (mode 0600, one JSON object a line: id, hash,
user, role, created, expires). A key is `sfk_<id>.<secret>`: its id (`sfk_` and 16 hex digits) finds
the line, the hash of the whole key must match (compared in constant time). A key holds 256 random
bits, so a plain SHA-256 cannot be reversed by guessing. `revoke_api_key` removes the line; a running
listener re-reads the file when it changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api_compat.principal import AuthError, Principal, check_role

log = logging.getLogger(__name__)

KEYS_FILE_NAME = "api_keys"
KEY_PREFIX = "sfk_"
_ID = re.compile(r"sfk_[0-9a-f]{16}")
_KEY = re.compile(r"(sfk_[0-9a-f]{16})\.[A-Za-z0-9_-]{20,128}")


def keys_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_FILE_NAME


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            entry = json.loads(line)
            entries[str(entry["id"])] = entry
        except (ValueError, KeyError, TypeError):
            log.error("%s line %d is not an API key entry; ignored", path, number)
    return entries


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(data_dir) / f".{KEYS_FILE_NAME}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Replace the file whole (write, fsync, rename): a listener never reads half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# API keys of this data directory, hashed (sha256); `stepflow token create --api-key` adds them\n")
        fh.writelines(json.dumps(entry, sort_keys=True) + "\n" for entry in entries.values())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def create_api_key(data_dir: Path, *, user: str, role: str, expires_in: float | None = None) -> tuple[str, str]:
    """A new key for `user` with `role`: (the key, shown once; its id, for `revoke_api_key`)."""
    check_role(role)
    key_id = KEY_PREFIX + secrets.token_hex(8)
    key = f"{key_id}.{secrets.token_urlsafe(32)}"
    now = int(time.time())
    entry = {"id": key_id, "sha256": _digest(key), "user": user, "role": role, "created": now,
             "expires": None if expires_in is None else now + int(expires_in)}
    path = keys_path(data_dir)
    with _locked(data_dir):
        entries = _read(path)
        entries[key_id] = entry
        _write(path, entries)
    return key, key_id


def is_api_key_ref(value: str) -> bool:
    """True when `value` is an API key or its id (what `stepflow token revoke` is given)."""
    return value.strip().startswith(KEY_PREFIX)


def revoke_api_key(data_dir: Path, key_or_id: str) -> tuple[str, bool]:
    """Forget a key (given its id or the key itself); (id, False when there was no such key)."""
    value = key_or_id.strip()
    match = _KEY.fullmatch(value)
    key_id = match.group(1) if match else value
    if not _ID.fullmatch(key_id):
        raise AuthError(f"{value[:40]!r} is not an API key id (the sfk_... id that `stepflow token create "
                        f"--api-key` printed)")
    path = keys_path(data_dir)
    with _locked(data_dir):
        entries = _read(path)
        entry = entries.pop(key_id, None)
        if entry is None:
            return key_id, False
        if match and not hmac.compare_digest(entry["sha256"], _digest(value)):
            raise AuthError("that is not the key with this id")
        _write(path, entries)
    return key_id, True


class ApiKeys:
    """The keys as a running listener sees them: re-read when the file changes (one stat a check)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = keys_path(data_dir)
        self._entries: dict[str, dict[str, Any]] = {}
        self._seen: tuple[int, int, int] | None = None
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = self._path.stat()
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        try:
            self._entries = _read(self._path) if seen is not None else {}
        except OSError as exc:
            # refuse every key rather than accept a revoked one
            log.error("cannot read the API keys %s: %s", self._path, exc.strerror or exc)
            raise AuthError("the server cannot read its API keys (see its log)") from None
        self._seen = seen

    def verify(self, key: str) -> Principal:
        self._refresh()
        match = _KEY.fullmatch(key.strip())
        entry = self._entries.get(match.group(1)) if match else None
        # compared even when the id is unknown: the answer takes as long either way
        expected = entry["sha256"] if entry is not None else "0" * 64
        if not hmac.compare_digest(expected, _digest(key.strip())) or entry is None:
            raise AuthError("the API key is not valid for this server (revoked, or never made here)")
        expires = entry.get("expires")
        if expires is not None and expires <= time.time():
            raise AuthError("the API key has expired; make a new one with `stepflow token create --api-key`")
        return Principal(user=str(entry["user"]), role=check_role(str(entry["role"])), via="api_key",
                         credential_id=str(entry["id"]))
