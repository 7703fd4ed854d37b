"""Simulation: the engine on a virtual clock against the simulated Keepa.

Invariant: a simulation is a pure function of (config, hours): same inputs,
same events, same numbers.
"""
from __future__ import annotations

import math

from ..core.clock import VirtualClock
from ..config import Config, load_config
from ..core.engine import Engine
from ..core.events import EventLog
from .keepa import SimulatedKeepa
from .memory_store import MemoryStore


def _pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class SimResult:
    """What a simulation did: the engine (tasks, bucket, events) and the store."""

    def __init__(self, config: Config, engine: Engine, transport: SimulatedKeepa, store: MemoryStore,
                 hours: float):
        self.config = config
        self.engine = engine
        self.transport = transport
        self.store = store
        self.hours = hours
        self.end = engine.ended_at

    @property
    def events(self) -> EventLog:
        return self.engine.events

    def freshness(self, since: float = 0.0) -> dict:
        """Arrival-to-upsert delay of live deals that arrived at or after ``since`` (seconds into the run).

        A deal published before the run started arrived at 0 for this purpose. A deal still
        waiting at the end counts with its wait so far (a lower bound), so a starved Upserter
        cannot look fresh by upserting nothing.
        """
        stream, first = self.transport.stream, self.store.first_stored
        t0 = stream.start_unix
        delays, unserved = [], 0
        for i in range(stream.published_count(t0 + self.end)):
            a = max(0.0, stream.published_at(i) - t0)
            if a < since:
                continue
            stored = first.get(stream.asin(i))
            if stored is None:
                delays.append(self.end - a)
                unserved += 1
            else:
                delays.append(stored - a)
        served = len(delays) - unserved
        delays.sort()
        return {"deals": served + unserved, "served": served, "unserved": unserved,
                "p50_s": _pct(delays, 0.5), "p95_s": _pct(delays, 0.95),
                "max_s": delays[-1] if delays else None}

    def task_summary(self) -> dict:
        bound = self.config.starvation_bound
        out = {}
        for st in self.engine.states:
            out[st.name] = {
                "role": st.spec.role,
                "target": st.spec.target(self.config.policy),
                "first_grant_s": st.first_grant,
                "grants": st.grants,
                "items": st.items,
                "tokens_spent": st.spent,
                "max_wait_s": st.max_wait,
                "max_no_progress_s": st.max_no_progress,
                "runs": st.runs,
                "aborts": st.aborts,
                "refused_429": st.refused,
                "starved": st.max_no_progress > bound + 1e-3,
            }
        return out

    def brief(self) -> dict:
        """The part of ``summary`` a side-by-side comparison shows."""
        s = self.summary()
        keep = ("first_grant_s", "grants", "items", "max_wait_s", "max_no_progress_s", "starved")
        return {"starved": s["starved"], "freshness": s["freshness"],
                "tasks": {n: {k: t[k] for k in keep} for n, t in s["tasks"].items()}}

    def summary(self) -> dict:
        tasks = self.task_summary()
        b = self.transport.meter.bucket  # Keepa's own bucket; the engine's is its estimate
        end_balance = b.balance(self.end)
        backfill = self.config.task("backfiller")
        days = self.hours / 24.0
        return {
            "hours": self.hours,
            "policy": self.config.policy,
            "refill_per_minute": self.config.refill_per_minute,
            "starvation_bound_s": self.config.starvation_bound,
            "starved": [n for n, t in tasks.items() if t["starved"]],
            "tasks": tasks,
            "tokens_refilled": b.refilled,
            "tokens_spent": sum(t["tokens_spent"] for t in tasks.values()),
            "tokens_wasted_at_cap": b.wasted,
            "end_balance": end_balance,
            "freshness": self.freshness(),
            "backfill_per_day": (tasks[backfill.name]["items"] / days) if backfill and days > 0 else None,
            "events": len(self.events),
            "keepa": self.keepa_summary(),
        }

    def keepa_summary(self) -> dict:
        """What Keepa saw: calls, charges, refusals, and how often the engine's estimate was corrected."""
        syncs = self.events.of("sync")
        corrections = [r.balance - r.detail["estimate"] for r in syncs if r.detail and "estimate" in r.detail]
        big = [c for c in corrections if abs(c) >= 1.0]
        return {"calls": dict(self.transport.calls), "charged": self.transport.meter.charged,
                "refused_429": self.transport.meter.refused, "syncs": len(syncs), "corrections": len(big),
                "max_correction": max(big, key=abs) if big else 0.0}


def simulate(config, hours: float = 24.0, events: EventLog | None = None,
             max_step: float | None = None) -> SimResult:
    """Run ``config`` for ``hours`` of virtual time. ``max_step`` forces a naive stepper."""
    config = load_config(config)
    clock = VirtualClock(0.0, max_step=max_step)
    store = MemoryStore()
    keepa = SimulatedKeepa(config, clock)
    engine = Engine(config, clock, keepa, store, events)
    engine.run(until=hours * 3600.0)
    return SimResult(config, engine, keepa, store, hours)
