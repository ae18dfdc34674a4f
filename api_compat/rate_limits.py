"""Rate limits shared by the surfaces: the `limits` library's moving window, in memory.

`MovingWindowLimit` counts one kind of event per key (failed authentications per client address).
A surface declares its request limits as a `RatePolicy`: named categories (`RateCategory`), each a
limit (optionally one per role) and what it counts by: the user (`by="user"`), the client address
(`by="ip"`) or a path parameter (`by="path:runner_id"`). A route names its category
(`RouteDoc.rate_limit`), else it is in the policy's `default` category (None: not limited). The
listener's `RateLimiter` applies them, with `ApiConfig.rate_limits` overriding the numbers.
Remaining counts and reset times always come from the limiter's own window, never a second count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api_compat.config import ConfigError

#: an override value that turns a category off
OFF = ("off", "none", "unlimited")


def parse_limit(text: str, where: str = "the rate limit") -> RateLimitItem:
    """`10/minute`, `100 per hour`... (the `limits` notation); ConfigError when it is not one."""
    try:
        return parse(text)
    except ValueError:
        raise ConfigError(f"{where}={text!r} is not a rate limit (write it like '10/minute')") from None


class MovingWindowLimit:
    """At most `limit` events per key over a moving window."""

    def __init__(self, limit: str) -> None:
        self.item = parse_limit(limit)
        # in-memory: the count resets with the process, and each listener process counts alone
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def exceeded(self, key: str) -> bool:
        """True when one more event for `key` would be over the limit (counts nothing)."""
        return not self._limiter.test(self.item, key)

    def hit(self, key: str) -> bool:
        """Count one event; False when it was over the limit."""
        return self._limiter.hit(self.item, key)

    def retry_after(self, key: str) -> int:
        """Whole seconds until `key` may have one more event (at least 1)."""
        reset_time, _remaining = self._limiter.get_window_stats(self.item, key)
        return max(1, math.ceil(reset_time - time.time()))


# -- a surface's declared request limits ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateCategory:
    #: the limit in the `limits` notation ("100/minute")
    limit: str
    #: what is counted apart: "user" (the authenticated user; the client address without one),
    #: "ip" (the client address), or "path:NAME" (the route's path parameter NAME)
    by: str = "user"
    #: a different limit for some roles ({"administrator": "500/minute"})
    role_limits: Mapping[str, str] = field(default_factory=dict)
    #: for the OpenAPI document ("per user", "per runner"); default from `by`
    description: str = ""

    def path_param(self) -> str | None:
        return self.by.removeprefix("path:") if self.by.startswith("path:") else None

    def check(self, where: str) -> None:
        if self.by not in ("user", "ip") and not (self.path_param() or "").isidentifier():
            raise ValueError(f"{where}: by={self.by!r} is not 'user', 'ip' or 'path:NAME'")
        for text in (self.limit, *self.role_limits.values()):
            parse_limit(text, where)

    def explain(self) -> str:
        counted = self.description or {"user": "per user", "ip": "per client address"}.get(
            self.by, f"per {self.path_param()}")
        limits = ", ".join([self.limit, *(f"{r}: {lim}" for r, lim in self.role_limits.items())])
        return f"{limits} {counted}"


@dataclass(frozen=True, slots=True)
class RatePolicy:
    categories: Mapping[str, RateCategory]
    #: the category of a route that names none (None: such routes are not limited)
    default: str | None = None


@dataclass(frozen=True, slots=True)
class RateState:
    """One request's count: what the `X-RateLimit-*` headers say."""

    allowed: bool
    limit: int
    remaining: int
    #: epoch seconds when the window lets one more request in
    reset: float

    def headers(self) -> dict[str, str]:
        # both documents (OpsConductor, RustCI) show the reset as a Unix timestamp in seconds
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(math.ceil(self.reset))}

    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset - time.time()))


def parse_overrides(text: str, where: str = "STEPFLOW_RATE_LIMITS") -> tuple[tuple[str, str], ...]:
    """`opsconductor.requests.standard=200/minute,rustci.jobs=off` -> pairs (checked by `check_overrides`)."""
    pairs = []
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"{where}: {part.strip()!r} is not SURFACE.CATEGORY[.ROLE]=LIMIT")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def check_overrides(overrides: Iterable[tuple[str, str]], where: str = "STEPFLOW_RATE_LIMITS") -> None:
    for key, value in overrides:
        if not 2 <= len(key.split(".")) <= 3 or not all(key.split(".")):
            raise ConfigError(f"{where}: {key!r} is not SURFACE.CATEGORY or SURFACE.CATEGORY.ROLE")
        if value.lower() not in OFF:
            parse_limit(value, f"{where} {key}")


class RateLimiter:
    """The listener's request counts, one moving window per (surface, category, role's limit, key)."""

    def __init__(self, policies: Mapping[str, RatePolicy], overrides: Iterable[tuple[str, str]] = ()) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        #: (surface, category) -> (role or "" -> limit item or None when off)
        self._items: dict[tuple[str, str], dict[str, RateLimitItem | None]] = {}
        for surface, policy in policies.items():
            for name, category in policy.categories.items():
                items: dict[str, RateLimitItem | None] = {"": parse_limit(category.limit)}
                items.update({role: parse_limit(text) for role, text in category.role_limits.items()})
                self._items[(surface, name)] = items
        for key, value in overrides:
            surface, name, *role = key.split(".")
            items_or_none = self._items.get((surface, name))
            if items_or_none is None:
                known = ", ".join(f"{s}.{c}" for s, c in self._items) or "none"
                raise ConfigError(f"rate limit {key!r}: this listener has no such category (known: {known})")
            item = None if value.lower() in OFF else parse_limit(value, f"rate limit {key}")
            if role:
                items_or_none[role[0]] = item
            else:  # the category's limit for every role
                for r in list(items_or_none):
                    items_or_none[r] = item

    def item(self, surface: str, category: str, role: str | None) -> RateLimitItem | None:
        items = self._items[(surface, category)]
        return items.get(role or "", items[""])

    def hit(self, surface: str, category: str, role: str | None, key: str) -> RateState | None:
        """Count one request for `key`; None when the category is off."""
        item = self.item(surface, category, role)
        if item is None:
            return None
        allowed = self._limiter.hit(item, surface, category, key)
        reset, remaining = self._limiter.get_window_stats(item, surface, category, key)
        return RateState(allowed=allowed, limit=item.amount, remaining=max(remaining, 0), reset=reset)


#: OpsConductor's document (Rate Limiting): per user, 100 requests a minute, 500 for administrators;
#: every route counts (`opsconductor.requests[.ROLE]` in the overrides, for a surface named opsconductor)
OPSCONDUCTOR_POLICY = RatePolicy(
    {"requests": RateCategory("100/minute", by="user", role_limits={"administrator": "500/minute"})},
    default="requests",
)

#: RustCI's runner document (Rate Limiting): registration 10/minute per IP, status and health
#: 100/minute per runner, job submission 50/minute per runner, bulk operations 5/minute per user;
#: routes of no category are not limited (a route names its category: `RouteDoc(rate_limit="jobs")`)
RUSTCI_POLICY = RatePolicy({
    "registration": RateCategory("10/minute", by="ip"),
    "status": RateCategory("100/minute", by="path:runner_id", description="per runner"),
    "jobs": RateCategory("50/minute", by="path:runner_id", description="per runner"),
    "bulk": RateCategory("5/minute", by="user"),
})
