"""Rate limits shared by the surfaces: the `limits` library's moving window, in memory.

One `MovingWindowLimit` per kind of thing counted (failed authentications per client address here;
requests per user or per runner where a documented API asks for it). Its `retry_after` and
`remaining` come from the limiter's own window, never from a second count.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api_compat.config import ConfigError


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
