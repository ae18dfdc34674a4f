"""Bearer tokens: HS256 JWTs signed with a secret kept in the data directory (mode 0600), and API
keys (api_compat/api_keys.py), both carrying a user and a role.

`stepflow token create` calls `create_token`, `stepflow token revoke` calls `revoke_token`; the
listener verifies with `TokenVerifier`. Every token carries an id (`jti`); a revoked id is listed
in the denylist beside the secret (`api_revoked_tokens`, one id a line), which a running listener
re-reads when the file changes. Failed authentications are counted per client address: past the
limit the verifier answers `AuthThrottled` (429) until the moving window lets it through.

A token names its user (`sub`) and role (`role`: standard or administrator); a token minted before
roles existed has none and counts as the administrator's: it was the owner's. A verified request
carries its `Principal` (`request["principal"]`, api_compat/access.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import jwt

from api_compat.api_keys import KEY_PREFIX, ApiKeys, revoke_api_key
from api_compat.principal import ADMINISTRATOR, ROLES, AuthError, Principal, check_role
from api_compat.rate_limits import MovingWindowLimit

__all__ = ["AuthError", "Principal", "create_token", "revoke_token", "token_id", "TokenVerifier"]

log = logging.getLogger(__name__)

SECRET_FILE_NAME = "api_secret"
REVOKED_FILE_NAME = "api_revoked_tokens"
ISSUER = "stepflow"
_ALGORITHM = "HS256"
_JTI = re.compile(r"[A-Za-z0-9_-]{1,128}")
def principal_of(claims: dict[str, object]) -> Principal:
    role = claims.get("role", ADMINISTRATOR)  # before roles, every token was the owner's
    if role not in ROLES:
        raise AuthError(f"the token's role {role!r} is not one this server knows")
    return Principal(user=str(claims["sub"]), role=str(role), via="bearer", credential_id=str(claims["jti"]))


class AuthThrottled(AuthError):
    """Too many failed authentications from one client address: answer 429 with Retry-After."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def secret_path(data_dir: Path) -> Path:
    return Path(data_dir) / SECRET_FILE_NAME


def load_or_create_secret(data_dir: Path) -> bytes:
    """The signing secret, created on first use with owner-only permissions."""
    path = secret_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); restricting it to 0600", path, mode)
            path.chmod(0o600)
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise AuthError(f"{path} does not hold a usable secret; delete it to make a new one") from None
        return secret.encode()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def revoked_path(data_dir: Path) -> Path:
    return Path(data_dir) / REVOKED_FILE_NAME


def token_id(token: str) -> str:
    """The id (`jti`) of a token, read without checking it (for messages; never trust it)."""
    try:
        jti = jwt.decode(token, options={"verify_signature": False}).get("jti")
    except jwt.InvalidTokenError:
        raise AuthError("that is not a token") from None
    if not isinstance(jti, str):
        raise AuthError("that token has no id (jti) to revoke")
    return jti


def create_token(data_dir: Path, *, subject: str = "stepflow", expires_in: float | None = None,
                 role: str | None = None) -> str:
    """Mint a bearer token for this data directory's listener, for user `subject` with `role`
    (None: no role claim, which counts as administrator). `expires_in` in seconds (None: never).
    Its id, for `revoke_token`, is `token_id(token)`."""
    now = int(time.time())
    claims: dict[str, object] = {"iss": ISSUER, "sub": subject, "iat": now, "jti": secrets.token_hex(8)}
    if role is not None:
        claims["role"] = check_role(role)
    if expires_in is not None:
        claims["exp"] = now + int(expires_in)
    return jwt.encode(claims, load_or_create_secret(data_dir), algorithm=_ALGORITHM)


def read_revoked(data_dir: Path) -> frozenset[str]:
    """The revoked ids; empty when nothing was ever revoked."""
    try:
        return _parse_revoked(revoked_path(data_dir).read_text())
    except FileNotFoundError:
        return frozenset()


def _parse_revoked(text: str) -> frozenset[str]:
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@contextlib.contextmanager
def _secret_locked(data_dir: Path) -> Iterator[None]:
    # the secret file is never replaced, so its lock serializes two revokes at once
    load_or_create_secret(data_dir)
    fd = os.open(secret_path(data_dir), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def revoke_token(data_dir: Path, token_or_id: str) -> tuple[str, bool]:
    """Add a token's id to the denylist (given the id, or the whole token, whose signature must be
    this data directory's); an API key (`sfk_...`, its id or the key) is forgotten instead. Returns (id, False when it was revoked already). The file is replaced
    whole (write, fsync, rename), so a listener never reads half of it."""
    value = token_or_id.strip()
    if value.startswith(KEY_PREFIX):
        return revoke_api_key(data_dir, value)
    if value.count(".") == 2:
        try:
            claims = jwt.decode(value, load_or_create_secret(data_dir), algorithms=[_ALGORITHM],
                                options={"verify_exp": False, "verify_iss": False})
        except jwt.InvalidTokenError:
            raise AuthError("that token was not signed by this data directory's secret") from None
        jti = claims.get("jti")
        if not isinstance(jti, str):
            raise AuthError("that token has no id (jti) to revoke")
        value = jti
    if not _JTI.fullmatch(value):
        raise AuthError(f"{value!r} is not a token id (the jti that `stepflow token create` printed)")
    path = revoked_path(data_dir)
    with _secret_locked(data_dir):
        revoked = read_revoked(data_dir)
        if value in revoked:
            return value, False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# token ids (jti) refused by the API listener; `stepflow token revoke` adds them\n")
            fh.writelines(f"{jti}\n" for jti in sorted(revoked | {value}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return value, True


class TokenVerifier:
    def __init__(self, data_dir: Path, *, failure_limit: str = "10/minute") -> None:
        self._secret = load_or_create_secret(data_dir)
        self._revoked_path = revoked_path(data_dir)
        self._revoked: frozenset[str] = frozenset()
        #: (inode, mtime, size) of the denylist as last read: a rename makes a new inode, so two
        #: revokes within one tick of the file system's clock are still told apart
        self._revoked_seen: tuple[int, int, int] | None = None
        self._failures = MovingWindowLimit(failure_limit)
        # a token is checked once per request: remember the good ones for a little while (forgotten
        # at once when the denylist changes)
        self._good: dict[str, tuple[float, Principal]] = {}
        self._api_keys = ApiKeys(data_dir)
        self._refresh_revoked()

    def _refresh_revoked(self) -> None:
        """Re-read the denylist when it changed (one stat per request)."""
        try:
            st = self._revoked_path.stat()
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._revoked_seen:
            return
        try:
            text = self._revoked_path.read_text() if seen is not None else ""
        except OSError as exc:
            # refuse every token rather than accept a revoked one
            log.error("cannot read the token denylist %s: %s", self._revoked_path, exc.strerror or exc)
            raise AuthError("the server cannot read its token denylist (see its log)") from None
        self._revoked = _parse_revoked(text)
        self._revoked_seen = seen
        self._good.clear()

    def verify(self, token: str) -> dict[str, object]:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], issuer=ISSUER,
                options={"require": ["iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired; mint a new one with `stepflow token create`") from None
        except jwt.InvalidTokenError:
            raise AuthError("the token is not valid for this server") from None
        if claims["jti"] in self._revoked:
            raise AuthError("the token has been revoked; mint a new one with `stepflow token create`")
        return claims

    def check_request(self, authorization: str | None, query_token: str | None = None, *,
                      client: str | None = None, api_key: str | None = None,
                      api_key_accepted: bool = False) -> Principal:
        """`check_header`, counting failures per `client` address: past the limit, `AuthThrottled`
        (even for a good token: a guesser must not learn that a guess was right). `api_key`: the
        `X-API-Key` header, on a surface that accepts one (checked when there is no bearer token)."""
        key = client or "unknown"
        if self._failures.exceeded(key):
            raise AuthThrottled("too many failed authentications from this address; retry later",
                                self._failures.retry_after(key))
        try:
            if api_key and not authorization:
                return self._api_keys.verify(api_key)
            if api_key_accepted and not authorization and not query_token:
                raise AuthError("authentication required: send 'Authorization: Bearer <token>' or "
                                "'X-API-Key: <key>'")
            return self.check_header(authorization, query_token)
        except AuthError:
            self._failures.hit(key)
            raise

    def check_header(self, authorization: str | None, query_token: str | None = None) -> Principal:
        """Accept `Authorization: Bearer <token>`; `query_token` (the `?token=` of a WebSocket URL,
        since browsers cannot set headers on a WebSocket) when given. Returns who sent it."""
        self._refresh_revoked()
        token: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError("use 'Authorization: Bearer <token>'")
            token = value.strip()
        elif query_token:
            token = query_token
        if not token:
            raise AuthError("authentication required: send 'Authorization: Bearer <token>'")
        now = time.monotonic()
        good = self._good.get(token)
        if good is not None and good[0] > now:
            return good[1]
        claims = self.verify(token)
        principal = principal_of(claims)
        exp = claims.get("exp")
        ttl = 60.0 if exp is None else min(60.0, float(exp) - time.time())  # type: ignore[arg-type]
        if len(self._good) > 1024:
            self._good.clear()
        self._good[token] = (now + max(ttl, 0.0), principal)
        return principal
