"""A thread-safe circuit breaker for the online-store read on the serving hot path.

Closed: every call goes through. After ``failures`` consecutive failures it opens: calls are refused at once
(the caller answers from its fallback) for ``reset_s`` seconds. Then exactly one caller is let through as a
half-open probe; its success closes the circuit, its failure re-opens it for another ``reset_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one dependency and refuses calls while it is considered down.

    A probe that never reports back (its caller died between :meth:`allow` and ``record_*``) does not wedge
    the breaker: after another ``reset_s`` in half-open, the next caller becomes the probe.
    """

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Open after ``failures`` consecutive failures; probe again ``reset_s`` seconds after opening."""
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        if reset_s <= 0:
            raise ValueError(f"reset_s must be positive, got {reset_s}")
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = CLOSED
        self._count = 0
        self._since = 0.0  # when the circuit opened, or when the probe was let through
        self.last_error = ""

    @property
    def state(self) -> State:
        """``"closed"``, ``"open"`` or ``"half_open"`` (a probe is in flight)."""
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """True if the caller may try the dependency now (closed, or it is the one half-open probe)."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._clock() - self._since < self.reset_s:
                return False  # open and still cooling down, or a probe is in flight
            self._state = HALF_OPEN
            self._since = self._clock()
            return True

    def record_success(self) -> None:
        """The call worked: close the circuit and forget earlier failures."""
        with self._lock:
            self._state = CLOSED
            self._count = 0

    def record_failure(self, error: object = "") -> None:
        """The call failed (``error`` is kept as :attr:`last_error`): open at the threshold, re-open after a probe."""
        with self._lock:
            if error:
                self.last_error = str(error)
            self._count += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._count >= self.failures):
                self._state = OPEN
                self._since = self._clock()
