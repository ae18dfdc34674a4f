"""Bearer tokens: HS256 JWTs signed with a secret kept in the data directory (mode 0600).

`stepflow token create` calls `create_token`; the listener verifies with `TokenVerifier`.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from pathlib import Path

import jwt

log = logging.getLogger(__name__)

SECRET_FILE_NAME = "api_secret"
ISSUER = "stepflow"
_ALGORITHM = "HS256"


class AuthError(Exception):
    """A request without a valid token; the message says what is wrong (never the token)."""


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


def create_token(data_dir: Path, *, subject: str = "stepflow", expires_in: float | None = None) -> str:
    """Mint a bearer token for this data directory's listener. `expires_in` in seconds (None: never)."""
    now = int(time.time())
    claims: dict[str, object] = {"iss": ISSUER, "sub": subject, "iat": now, "jti": secrets.token_hex(8)}
    if expires_in is not None:
        claims["exp"] = now + int(expires_in)
    return jwt.encode(claims, load_or_create_secret(data_dir), algorithm=_ALGORITHM)


class TokenVerifier:
    def __init__(self, data_dir: Path) -> None:
        self._secret = load_or_create_secret(data_dir)
        # a token is checked once per request: remember the good ones for a little while
        self._good: dict[str, float] = {}

    def verify(self, token: str) -> dict[str, object]:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], issuer=ISSUER,
                options={"require": ["iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired; mint a new one with `stepflow token create`") from None
        except jwt.InvalidTokenError:
            raise AuthError("the token is not valid for this server") from None
        return claims

    def check_header(self, authorization: str | None, query_token: str | None = None) -> None:
        """Accept `Authorization: Bearer <token>`; `query_token` (the `?token=` of a WebSocket URL,
        since browsers cannot set headers on a WebSocket) when given."""
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
        until = self._good.get(token)
        if until is not None and until > now:
            return
        claims = self.verify(token)
        exp = claims.get("exp")
        ttl = 60.0 if exp is None else min(60.0, float(exp) - time.time())  # type: ignore[arg-type]
        if len(self._good) > 1024:
            self._good.clear()
        self._good[token] = now + max(ttl, 0.0)
