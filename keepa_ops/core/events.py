"""The structured event log: everything the engine does is one event.

Invariant: events are appended in non-decreasing time ``t`` (seconds since the
run started); ``ts`` is ``start + t`` in UTC. The JSON-lines form is what the
log parser reads back (one object per line, ``"event"`` names the kind).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

KINDS = ("run_start", "found", "wait", "heartbeat", "grant", "spend", "sync", "429", "upsert", "abort",
         "fault", "run_finish")
FIELDS = ("t", "event", "task", "balance", "target", "cost", "items", "wait_s", "detail")


def _r(x):
    return None if x is None else round(float(x), 3)


class EventLog:
    """Appends events in memory; ``on_event(row)``, if set, sees each one as it happens."""

    def __init__(self, start: datetime | None = None, on_event=None):
        self.start = (start or datetime(2026, 2, 4, tzinfo=timezone.utc)).astimezone(timezone.utc)
        self.rows: list[tuple] = []
        self.on_event = on_event

    def emit(self, t, event, task=None, balance=None, target=None, cost=None, items=None,
             wait_s=None, detail=None):
        row = (t, event, task, balance, target, cost, items, wait_s, detail)
        self.rows.append(row)
        if self.on_event is not None:
            self.on_event(row)

    def __len__(self):
        return len(self.rows)

    def timestamp(self, t: float) -> datetime:
        return self.start + timedelta(seconds=t)

    def to_json(self, row) -> str:
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

    def of(self, event: str, task: str | None = None) -> list[tuple]:
        return [r for r in self.rows if r[1] == event and (task is None or r[2] == task)]

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
