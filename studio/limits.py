"""How often one user may call the APIs: a token bucket per user, shared by REST and the named Gradio API.

The service (`Studio.check_rate`) holds the one limiter of the process, so a user's requests draw from one
bucket whichever edge they come through and however many API keys the user holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute on average, bursts up to `burst`.

    Args:
        per_minute: refill rate (requests a minute).
        burst: bucket size (default: `per_minute`).
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, per_minute: int, *, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst or max(1, per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """Take one token from `key`'s bucket.

        Returns:
            0.0 when the request may go ahead, else the seconds to wait before the next one.
        """
        with self._lock:
            now = self.clock()
            tokens, since = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - since) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
