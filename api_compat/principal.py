"""Who made a request (`Principal`: user and role), the roles, and `AuthError`: what the token and
API-key modules share, apart so that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass


class AuthError(Exception):
    """A request without a valid credential; the message says what is wrong (never the credential)."""


STANDARD = "standard"
ADMINISTRATOR = "administrator"
#: the roles, lowest first: a route open to a role is open to every role after it
ROLES = (STANDARD, ADMINISTRATOR)


def role_rank(role: str) -> int:
    return ROLES.index(role)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"{role!r} is not a role (one of {', '.join(ROLES)})")
    return role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the verified claims a handler may read."""

    user: str
    role: str
    #: "bearer" (a JWT), "api_key", "runner_token" (a RustCI runner's registration token), or "none"
    #: (the surface asked for no credential: the listener's auth is off, and whoever reaches a
    #: loopback address is this machine's owner)
    via: str
    #: the token's jti or the API key's id ("" for none)
    credential_id: str = ""

    @property
    def authenticated(self) -> bool:
        return self.via != "none"

    def allows(self, role: str | None) -> bool:
        return role is None or role_rank(self.role) >= role_rank(role)


#: the principal of a request on a surface whose credentials are not asked for
OWNER = Principal(user="owner", role=ADMINISTRATOR, via="none")


