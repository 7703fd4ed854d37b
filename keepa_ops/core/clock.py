"""Clocks: the only difference between simulation and the live runner's timing.

Invariant: ``now()`` never goes backwards, and nothing but the engine calls
``sleep_until``. Times are seconds since the run started.
"""
from __future__ import annotations

import threading
import time


class VirtualClock:
    """Jumps straight to the next event. ``max_step`` (seconds) makes it a naive stepper."""

    def __init__(self, start: float = 0.0, max_step: float | None = None):
        self.t = float(start)
        self.max_step = max_step

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        if self.max_step is not None:
            t = min(t, self.t + self.max_step)
        if t > self.t:
            self.t = t

    def stop(self) -> None:
        """Nothing sleeps on a virtual clock, so there is nothing to wake."""


class RealClock:
    """Wall time, optionally ``speed`` times faster. ``stop()`` wakes any sleeper at once."""

    def __init__(self, speed: float = 1.0):
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self._t0 = time.monotonic()
        self._stop = threading.Event()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def sleep_until(self, t: float) -> None:
        delay = (t - self.now()) / self.speed
        if delay > 0:
            self._stop.wait(delay)

    def pause(self, real_seconds: float) -> None:
        """Wait ``real_seconds`` of wall time (for transport backoff), cut short by ``stop()``."""
        self._stop.wait(real_seconds)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()
