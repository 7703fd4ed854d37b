"""The structured event log: everything the engine does is one event.

Invariants: events are appended in non-decreasing time ``t`` (seconds since the
run started); ``ts`` is ``start + t`` in UTC; every row is an ``Event`` whose kind is
one of ``KINDS``. The JSON-lines form is what the log parser reads back (one object per
line, ``"event"`` names the kind).

The kinds: ``run_start``/``run_finish`` bracket a run; ``found`` is the Upserter's count of
new deals; ``wait`` (once per request) and ``heartbeat`` (every 15 minutes of waiting)
say a request waits for its target; ``promote`` is a priority request aged past its
deadline; ``grant`` admits it; ``spend`` is what Keepa charged; ``sync`` replaces the
estimate with Keepa's balance (``estimate`` says what it was); ``429`` is a refusal;
``upsert`` is a commit; ``abort`` gives up a wait longer than ``max_wait``; ``ticks_skipped``
counts the scheduled ticks that fell inside the run that just ended; ``fault`` is a
transient failure retried.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from typing import NamedTuple

KINDS = ("run_start", "found", "wait", "heartbeat", "promote", "grant", "spend", "sync", "429", "upsert",
         "abort", "ticks_skipped", "fault", "run_finish")


class Event(NamedTuple):
    """One thing the engine did. ``balance`` is the engine's estimate after it."""

    t: float
    event: str
    task: str | None = None
    balance: float | None = None
    target: float | None = None
    cost: float | None = None
    items: int | None = None
    wait_s: float | None = None
    detail: dict | None = None


FIELDS = Event._fields
_new_row = tuple.__new__  # Event(...) without the generated __new__'s extra call: emit is the hottest path


def _r(x):
    return None if x is None else round(float(x), 3)


class EventLog:
    """Appends events in memory; ``on_event(row)``, if set, sees each one as it happens."""

    def __init__(self, start: datetime | None = None, on_event=None):
        self.start = (start or datetime(2026, 2, 4, tzinfo=timezone.utc)).astimezone(timezone.utc)
        self.rows: list[Event] = []
        self.on_event = on_event

    def emit(self, t, event, task=None, balance=None, target=None, cost=None, items=None,
             wait_s=None, detail=None):
        row = _new_row(Event, (t, event, task, balance, target, cost, items, wait_s, detail))
        self.rows.append(row)
        if self.on_event is not None:
            self.on_event(row)

    def __len__(self):
        return len(self.rows)

    def timestamp(self, t: float) -> datetime:
        return self.start + timedelta(seconds=t)

    def to_json(self, row: Event) -> str:
        t, event, task, balance, target, cost, items, wait_s, detail = row
        d = {"ts": self.timestamp(t).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "t": round(t, 3), "event": event, "task": task, "balance": _r(balance)}
        if target is not None:
            d["target"] = _r(target)
        if cost is not None:
            d["cost"] = _r(cost)
        if items is not None:
            d["items"] = items
        if wait_s is not None:
            d["wait_s"] = _r(wait_s)
        if detail:
            d.update(detail)
        return json.dumps(d, separators=(",", ":"))

    def of(self, event: str, task: str | None = None) -> list[Event]:
        return [r for r in self.rows if r.event == event and (task is None or r.task == task)]

    def to_frame(self):
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=FIELDS)
        df.insert(0, "ts", pd.to_datetime(self.start) + pd.to_timedelta(df["t"], unit="s"))
        for col in ("balance", "target", "cost", "wait_s"):
            df[col] = df[col].astype("float64")
        df["items"] = df["items"].astype("Int64")
        return df

    def write(self, path) -> Path:
        """Write as JSON lines (``.jsonl``/``.json``/``.log``) or parquet (``.parquet``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            df = self.to_frame()
            df["detail"] = df["detail"].map(lambda d: json.dumps(d) if d else None)
            df.to_parquet(path, index=False)
        else:
            with open(path, "w") as f:
                for row in self.rows:
                    f.write(self.to_json(row) + "\n")
        return path
