"""The two jobs. The same code runs in simulation and live.

A run is a generator: it yields ``(cost, items)`` to ask the engine for an
admission, and the engine resumes it once the policy grants. Tasks never sleep
and never look at the clock except through ``ctx``.

Invariants:
* the Upserter stores deals oldest first and moves its watermark
  (last_update, asin) in the same store transaction as the rows it covers, so
  the watermark is never ahead of the stored rows;
* the Backfiller moves its checkpoint (page, offset) in the same transaction as
  the rows it covers, so a restart resumes where the last commit ended.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..keepa.wire import PAGE_SIZE, DealRef

if TYPE_CHECKING:
    from ..config import TaskSpec


class Upserter:
    """Syncs the deals newer than its watermark, in batches, once per scheduled run."""

    role = "upserter"

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.name = spec.name

    def run(self, ctx):
        spec = self.spec
        wm = ctx.store.watermark(self.name)
        fresh: dict[str, DealRef] = {}
        page = 0
        while True:
            resp = yield from ctx.call(self, spec.page_cost, 0, ctx.transport.deal_page, page, False)
            # "Newest first" pages are not strictly sorted in practice: every deal on the page is
            # compared with the watermark, none is assumed older for its place. lastUpdate has
            # minute resolution, so a deal published later in the watermark's own minute can
            # sort below it: that minute is re-checked against the store.
            items = resp.items
            if wm is None:
                newer, older = items, False
            else:
                edge = (wm.last_update,)   # a DealRef >= edge iff its lastUpdate >= the watermark's
                recent = [d for d in items if d >= edge]
                older = len(recent) < len(items)
                newer = [d for d in recent if d > wm or not ctx.store.has(d)]
            for d in newer:
                if d.asin not in fresh or fresh[d.asin] < d:
                    fresh[d.asin] = d
            if older or len(items) < PAGE_SIZE:
                break
            page += 1
        todo = sorted(fresh.values())
        ctx.found(self, len(todo))
        bs = spec.batch_size
        for i in range(0, len(todo), bs):
            batch = todo[i:i + bs]
            resp = yield from ctx.call(self, len(batch) * spec.cost_per_item, len(batch),
                                       ctx.transport.products, [d.asin for d in batch], spec.product_params)
            ctx.store_new(self, resp.items, batch, max(batch[-1], wm) if wm is not None else batch[-1])
        return False

    def next_start(self, ctx, started: float, now: float) -> float:
        sched = self.spec.schedule
        t = sched.first_at_or_after(now)
        if t <= started:
            t = sched.first_at_or_after(started + 1e-6)
        return t


class Backfiller:
    """Pages through the historical deal list; continuous, or one page per scheduled run."""

    role = "backfiller"

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.name = spec.name

    def run(self, ctx):
        """Returns True once the backlog is exhausted."""
        spec = self.spec
        page, offset = ctx.store.checkpoint(self.name) or (0, 0)
        while True:
            resp = yield from ctx.call(self, spec.page_cost, 0, ctx.transport.deal_page, page, True)
            deals = resp.items
            if offset >= len(deals):
                if len(deals) < PAGE_SIZE:
                    return True
                page, offset = page + 1, 0
                continue
            bs = spec.batch_size
            while offset < len(deals):
                batch = deals[offset:offset + bs]
                resp = yield from ctx.call(self, len(batch) * spec.cost_per_item, len(batch),
                                           ctx.transport.products, [d.asin for d in batch], spec.product_params)
                offset += len(batch)
                if offset >= len(deals) and len(deals) == PAGE_SIZE:
                    ckpt = (page + 1, 0)
                else:
                    ckpt = (page, offset)
                ctx.store_backfill(self, resp.items, batch, ckpt)
            if len(deals) < PAGE_SIZE:
                return True
            page, offset = page + 1, 0
            if not spec.schedule.continuous:
                return False

    def next_start(self, ctx, started: float, now: float) -> float:
        sched = self.spec.schedule
        if sched.continuous:
            return now
        t = sched.first_at_or_after(now)
        return t if t > started else sched.first_at_or_after(started + 1e-6)


def make_task(spec: TaskSpec):
    return Upserter(spec) if spec.role == "upserter" else Backfiller(spec)
