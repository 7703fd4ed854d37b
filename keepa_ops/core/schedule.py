"""When a task's runs start.

Invariants: ``first_at_or_after(t)`` is the earliest start time >= t (inf if none);
every schedule starts a run at t = 0; ``ticks_between(a, b)`` counts the start times
in (a, b), the ticks a run that began at ``a`` and ends before ``b`` sat through.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from croniter import croniter

_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h|d|w)?\s*$")


def parse_duration(value, field: str = "duration") -> float:
    """'90s', '5m', '1.5h', '2d' or a number of seconds -> seconds (float)."""
    from ..errors import ConfigError

    if isinstance(value, bool):
        raise ConfigError(field, f"expected a duration, got {value!r}.", "write e.g. 60s, 5m, 1h or 2d.")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(field, f"expected a finite duration, got {value!r}.", "write e.g. 60s, 5m, 1h or 2d.")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(field, f"{value!r} is not a duration.", "write e.g. 60s, 5m, 1h or 2d.")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


class Continuous:
    """The task runs again as soon as a run ends (a Backfiller)."""

    continuous = True

    def first_at_or_after(self, t: float) -> float:
        return t

    def ticks_between(self, a: float, b: float) -> int:
        return 0

    def __repr__(self):
        return "continuous"


class Every:
    """Runs at 0, p, 2p, ..."""

    continuous = False

    def __init__(self, period: float):
        self.period = float(period)

    def first_at_or_after(self, t: float) -> float:
        if t <= 0:
            return 0.0
        if math.isinf(t):
            return t
        return math.ceil(t / self.period - 1e-12) * self.period

    def ticks_between(self, a: float, b: float) -> int:
        first = self.first_at_or_after(a + 1e-6)
        if not first < b or math.isinf(b):
            return 0
        return max(0, math.ceil((b - first) / self.period - 1e-9))

    def __repr__(self):
        return f"every {self.period:g}s"


class Cron:
    """Runs at t = 0 and then at every match of a 5-field cron expression (UTC)."""

    continuous = False

    def __init__(self, expr: str, start: datetime):
        if not croniter.is_valid(expr):
            raise ValueError(expr)
        self.expr = expr
        self.start = start.astimezone(timezone.utc)

    def first_at_or_after(self, t: float) -> float:
        if t <= 0:
            return 0.0
        if math.isinf(t):
            return t
        base = self.start + timedelta(seconds=t) - timedelta(microseconds=1)
        nxt = croniter(self.expr, base).get_next(datetime)
        return (nxt - self.start).total_seconds()

    def ticks_between(self, a: float, b: float, limit: int = 10_000) -> int:
        n, t = 0, self.first_at_or_after(a + 1e-6)
        while t < b and n < limit:
            n += 1
            t = self.first_at_or_after(t + 1e-6)
        return n

    def __repr__(self):
        return f"cron {self.expr!r}"
