"""A token bucket that holds a request rate across threads.

Ometria allows a number of push requests per second (and another number of reads). The
bucket holds ``burst`` tokens (default one: requests leave evenly spaced, so no one-second
window ever holds more than the rate; a bigger burst would allow burst + rate in the first
second) and refills continuously; ``acquire`` blocks until a token is there. Several threads may share
one bucket, which is how push keeps enough requests in flight to fill the allowance when
each answer is slow, without ever crossing it.

``penalise`` empties the bucket for a while: after a 429 the whole client backs off, not
only the thread that was told.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    def __init__(self, rate: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be above zero")
        self.rate = rate
        self.capacity = burst if burst is not None else 1.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._blocked_until = 0.0
        self._lock = threading.Lock()
        self.acquired = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self) -> None:
        """Take one token, waiting as long as it takes."""
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                if now >= self._blocked_until and self._tokens >= 1:
                    self._tokens -= 1
                    self.acquired += 1
                    return
                wait = max(self._blocked_until - now, (1 - self._tokens) / self.rate)
            self._sleep(max(wait, 0.001))

    def penalise(self, seconds: float) -> None:
        """No token for ``seconds`` (a 429's Retry-After), then start from empty."""
        with self._lock:
            now = self._clock()
            self._blocked_until = max(self._blocked_until, now + seconds)
            self._tokens = 0.0
            self._stamp = max(self._stamp, now)
