"""Rate limits and injected faults of the Ometria emulator (in memory, per emulator object).

Reference, transport: push rate 8 (or 4) requests/s, read rate 4 requests/s, 429 when too
fast (honour ``Retry-After``), 5xx undocumented. Both are driven by injected callables (a
clock, a seeded random generator) so tests are deterministic.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Callable

FAULT_STATUSES = (500, 502, 503)


class TokenBucket:
    """``rate`` requests per second with one second of burst: capacity ``rate``, refilled
    continuously. A request takes one token or is refused, and a refused one takes nothing."""

    def __init__(self, rate: float, clock: Callable[[], float]):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.clock = clock
        self.tokens = self.capacity
        self.updated = clock()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """None when the request may go ahead, else the ``Retry-After`` seconds (>= 1)."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - self.tokens) / self.rate))


@dataclass(frozen=True)
class Fault:
    """An injected failure: the status to answer, and whether the request's work is done first."""

    status: int
    after_commit: bool


class FaultInjector:
    """``fail_rate`` of requests fail with 500/502/503, drawn from ``random.Random(seed)``.

    Three draws per request at most, always in the same order, so one seed and one sequence
    of requests give one sequence of faults. With ``fail_after_commit`` half the faults come
    after the request's work was done (a push queued: the client sees 5xx, the data arrived).
    """

    def __init__(self, fail_rate: float, fail_after_commit: bool, seed: int):
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be within 0..1")
        self.fail_rate = fail_rate
        self.fail_after_commit = fail_after_commit
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> Fault | None:
        if self.fail_rate <= 0.0:
            return None
        with self._lock:
            if self._random.random() >= self.fail_rate:
                return None
            status = self._random.choice(FAULT_STATUSES)
            after = self.fail_after_commit and self._random.random() < 0.5
        return Fault(status, after)
