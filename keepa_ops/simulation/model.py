"""The in-process Keepa model: a transport and a store for virtual time.

Invariants: the model meters exactly like Keepa (a token-costing call while the balance is
<= 0 is refused with ``NotEnoughTokens`` and charged nothing; otherwise its full
cost is debited, even below zero) and its deal stream is a pure function of the
workload, so a simulation is deterministic.
"""
from __future__ import annotations

import bisect
import math

from ..keepa.bucket import INF, TokenBucket
from ..config import Workload
from ..keepa.wire import PAGE_SIZE
from ..errors import NotEnoughTokens
from ..keepa.wire import DealRef, Envelope, Response


class ModelTransport:
    """Answers deal pages and product batches from a ``Workload``, debiting ``bucket``."""

    def __init__(self, workload: Workload, bucket: TokenBucket, clock):
        self.w = workload
        self.bucket = bucket
        self.clock = clock
        self._live: list[DealRef] = []  # live deal i, built once

    # -- the live deal stream -------------------------------------------------
    def arrival(self, i: int) -> float:
        """Arrival time (= lastUpdate) of live deal number i."""
        w = self.w
        if i < w.pending_new_deals:
            return 0.0
        k = i - w.pending_new_deals
        if w.arrivals is not None:
            return w.arrivals[k] if k < len(w.arrivals) else INF
        if w.new_deals_per_hour <= 0:
            return INF
        return (k + 1) * 3600.0 / w.new_deals_per_hour

    def arrived(self, t: float) -> int:
        w = self.w
        if w.arrivals is not None:
            return w.pending_new_deals + bisect.bisect_right(w.arrivals, t)
        if w.new_deals_per_hour <= 0:
            return w.pending_new_deals
        return w.pending_new_deals + math.floor(t * w.new_deals_per_hour / 3600.0 + 1e-9)

    def quiet_until(self, watermark) -> float:
        """No deal newer than ``watermark`` is visible before this time."""
        nxt = 0 if watermark is None else int(watermark.asin[1:]) + 1
        return self.arrival(nxt)

    # -- calls ------------------------------------------------------------------
    def _meter(self, cost: float):
        now = self.clock.now()
        if cost > 0 and self.bucket.balance(now) <= 0:
            raise NotEnoughTokens(Envelope(self.bucket.balance(now), 60000.0, self.bucket.rate, 0.0))
        self.bucket.spend(cost, now)

    def deal_page(self, page: int, backlog: bool, *, cost: float) -> Response:
        self._meter(cost)
        if backlog:
            lo = page * PAGE_SIZE
            hi = min(self.w.backlog, lo + PAGE_SIZE)
            items = [DealRef(-1.0, f"B{i:09d}") for i in range(lo, hi)]
        else:
            n = self.arrived(self.clock.now())
            live = self._live
            for i in range(len(live), n):
                live.append(DealRef(self.arrival(i), f"L{i:09d}"))
            hi = n - page * PAGE_SIZE
            lo = max(0, hi - PAGE_SIZE)
            items = live[lo:hi][::-1] if hi > 0 else []
        return Response(items, cost)

    def products(self, asins: list[str], *, cost: float) -> Response:
        self._meter(cost)
        return Response(list(asins), cost)


class MemoryStore:
    """The deals store for simulation: counts every upsert so tests can check exactly-once."""

    def __init__(self):
        self.watermarks: dict[str, DealRef] = {}
        self.checkpoints: dict[str, tuple[int, int]] = {}
        self.stored: dict[str, float] = {}   # asin -> first upsert time
        self.writes: dict[str, int] = {}     # asin -> times written
        self.live_delays: list[tuple[float, float]] = []  # (arrival, delay) per new live deal

    def watermark(self, task: str):
        return self.watermarks.get(task)

    def checkpoint(self, task: str):
        return self.checkpoints.get(task)

    def has(self, ref) -> bool:
        return ref.asin in self.stored

    def _put(self, refs, now):
        stored, writes = self.stored, self.writes
        for ref in refs:
            a = ref.asin
            writes[a] = writes.get(a, 0) + 1
            if a not in stored:
                stored[a] = now
                if ref.last_update >= 0:
                    self.live_delays.append((ref.last_update, now - ref.last_update))

    def commit_new(self, task, rows, refs, watermark, now):
        self._put(refs, now)
        self.watermarks[task] = watermark

    def commit_backfill(self, task, rows, refs, checkpoint, now):
        self._put(refs, now)
        self.checkpoints[task] = checkpoint
