"""Keepa's token bucket.

Invariants (Keepa's documented token rules):

* the balance refills ``refill_per_minute``, continuously or in one step per
  minute, and never rises above ``capacity`` (default 60 x refill: tokens expire
  after an hour); whatever would rise above is counted in ``wasted``;
* a spend is admitted while the balance is > 0 and debits its full cost, so the
  balance may go negative;
* ``sync`` replaces the estimate with what the server observed.

Continuous refill:  balance(t) = min(capacity, b0 + rate * (t - t0) / 60)
Stepped refill:     balance jumps by ``rate`` at ``phase + 60k`` seconds.
"""
from __future__ import annotations

import math

EPS = 1e-9
INF = math.inf


class TokenBucket:
    __slots__ = ("rate", "reduction", "capacity", "stepped", "phase", "_b", "_t", "refilled", "wasted", "spent")

    def __init__(self, refill_per_minute: float, start: float = 0.0, *, capacity: float | None = None,
                 stepped: bool = False, now: float = 0.0, phase: float = 0.0):
        if refill_per_minute <= 0:
            raise ValueError("refill_per_minute must be > 0")
        self.rate = float(refill_per_minute)
        self.reduction = 0.0  # Keepa's tokenFlowReduction: rate is the plan's rate minus this
        self.capacity = float(capacity) if capacity is not None else 60.0 * self.rate
        self.stepped = stepped
        self.phase = float(phase)
        self._b = min(float(start), self.capacity)
        self._t = float(now)
        self.refilled = 0.0  # gross inflow, tokens
        self.wasted = 0.0    # inflow lost at the cap
        self.spent = 0.0

    # -- time ---------------------------------------------------------------
    def _steps_between(self, t0: float, t1: float) -> int:
        return math.floor((t1 - self.phase) / 60.0) - math.floor((t0 - self.phase) / 60.0)

    def advance(self, now: float) -> float:
        """Bring the balance forward to ``now`` and return it."""
        dt = now - self._t
        if dt <= 0:
            return self._b
        if self.stepped:
            inflow = self._steps_between(self._t, now) * self.rate
        else:
            inflow = self.rate * dt / 60.0
        self._t = now
        if inflow:
            b = self._b + inflow
            self.refilled += inflow
            if b > self.capacity:
                # Tokens already above the cap (after a sync) are not counted as wasted inflow.
                self.wasted += b - max(self.capacity, self._b)
                b = self.capacity
            self._b = b
        return self._b

    def balance(self, now: float) -> float:
        return self.advance(now)

    def time_until(self, target: float, now: float) -> float:
        """Earliest time >= now at which the balance reaches ``target`` (inf if above the cap)."""
        b = self.advance(now)
        if b >= target - EPS:
            return now
        if target > self.capacity + EPS:
            return INF
        if not self.stepped:
            return now + (target - b) * 60.0 / self.rate
        steps = math.ceil((target - b) / self.rate - EPS)
        first = self.phase + (math.floor((now - self.phase) / 60.0) + 1) * 60.0
        return first + (steps - 1) * 60.0

    # -- money --------------------------------------------------------------
    def spend(self, cost: float, now: float) -> float:
        """Debit ``cost`` in full (Keepa admits any request while balance > 0)."""
        self.advance(now)
        self._b -= cost
        self.spent += cost
        return self._b

    def sync(self, tokens_left: float, now: float, refill_per_minute: float | None = None,
             refill_in_ms: float | None = None, token_flow_reduction: float = 0.0) -> float:
        """Replace the estimate with the server's word; return the old estimate.

        ``refill_per_minute`` is the plan's rate; ``token_flow_reduction`` lowers the refill
        below it (the capacity stays 60 minutes of the plan's rate, or the configured ratio).
        """
        old = self.advance(now)
        if refill_per_minute and refill_per_minute > 0:
            plan = self.rate + self.reduction
            if refill_per_minute != plan:
                self.capacity = self.capacity / plan * refill_per_minute
            self.reduction = max(0.0, min(float(token_flow_reduction or 0.0), refill_per_minute * 0.999))
            self.rate = float(refill_per_minute) - self.reduction
        if refill_in_ms is not None and self.stepped and refill_in_ms >= 0:
            self.phase = (now + refill_in_ms / 1000.0) % 60.0
        self._b = float(tokens_left)
        return old
