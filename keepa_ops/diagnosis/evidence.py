"""Evidence: what a log shows, measured once, for the verdict rules to read.

* ``runs`` and ``waits`` (``runs.py``, ``waits.py``): waits per run, never per task name;
* ``saved``: progress is saved work only: rows upserted, a backfill checkpoint or a
  watermark that moved, ``Task Complete`` with a non-zero upsert count. Grants and
  spends are not progress (a livelock spends all day and saves nothing);
* ``rate`` (``rate.py``) with its source;
* ``keepa_balance``: Keepa's own balance (``Tokens left``, ``tokensLeft``, a sync's new
  value). The token manager's ``Current``, ``Projected balance`` and ``Request blocked``
  numbers are its estimates and never count as Keepa's balance;
* ``hungry``: per task, its stretches of wanting tokens that no granted wait and no saved
  work interrupts (a task granted again and again is working, not starving, even if it
  saves only at the end of a long run);
* ``unsaved``: per task, its stretches of wanting tokens with no saved work in between,
  grants or not (a livelock is granted its peeks and saves nothing);
* ``stalled``: tasks whose last run died, was lost to a restart or went silent while it
  had work, and that never ran again (every tick since skips on the lock it left).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .rate import refill_rate
from .readings import waited_target
from .runs import SILENT_MIN_S, TOKEN_TASKS as KEEPA_TASKS, attribute, is_backfill
from .waits import wait_intervals

TOKEN_EVENTS = {"wait", "heartbeat", "grant", "spend", "abort", "429"}
WANT = {"wait", "heartbeat", "abort"}
STALL_MIN_S = 900.0


@dataclass
class Evidence:
    events: pd.DataFrame          # attributed: ``task`` filled, ``run`` added
    runs: pd.DataFrame
    waits: pd.DataFrame
    saved: pd.DataFrame           # time, task, what, items, where
    spends: pd.DataFrame          # the calls Keepa charged: time, task, consumed, where
    rate: float | None
    rate_source: str
    rate_how: str
    keepa_balance: pd.DataFrame   # time, balance, where
    tasks: dict
    hungry: pd.DataFrame          # task, start, end, duration_s, aborts, where
    unsaved: pd.DataFrame         # the same columns
    stalled: list
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    attribution: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def capacity(self) -> float | None:
        return 60 * self.rate if self.rate else None


def _saved_work(ev: pd.DataFrame) -> pd.DataFrame:
    rows = []
    last_pos: dict[str, tuple] = {}
    last_mark: dict[str, str] = {}
    it = ev[ev["event"].isin(["upsert", "checkpoint", "resume", "watermark", "watermark_loaded",
                              "run_finish"]) & ev["task"].notna()]
    for t, task, e, kind, items, detail, src, line in zip(
            it["time"], it["task"].astype(object), it["event"].astype(object), it["kind"].astype(object),
            it["items"].astype("float64"), it["detail"].astype(object), it["source"].astype(object), it["line"]):
        where = f"{src}:{int(line)}"
        if e == "upsert" and not (items <= 0):
            rows.append((t, task, "upserted", items, where))
        elif e == "run_finish" and kind == "ingest_complete" and items > 0:
            rows.append((t, task, "upserted", items, where))
        elif e in ("checkpoint", "resume", "watermark", "watermark_loaded"):
            d = json.loads(detail) if isinstance(detail, str) else {}
            if e in ("checkpoint", "resume"):
                pos = (d.get("page"), d.get("chunk"))
                if e == "checkpoint" and pos != last_pos.get(task):
                    rows.append((t, task, "checkpoint", np.nan, where))
                last_pos[task] = pos
            else:
                mark = d.get("iso")
                if e == "watermark" and mark != last_mark.get(task):
                    rows.append((t, task, "watermark", np.nan, where))
                last_mark[task] = mark
    return pd.DataFrame(rows, columns=["time", "task", "what", "items", "where"])


def _ms(series) -> list:
    return (pd.to_datetime(series).to_numpy().astype("datetime64[ms]").astype("int64")).tolist()


def _stretches(task: str, ev: pd.DataFrame, waits: pd.DataFrame, saved: pd.DataFrame, gap_s: float,
               grant_ends: bool):
    """Stretches in which ``task`` wanted tokens and saved nothing (a frame, empty if none): the span of its waits and
    give-ups that no saved work separates, no idle gap over ``gap_s`` and, if ``grant_ends``,
    no wait that ended in a grant."""
    import bisect

    w = waits[waits["task"] == task]
    aborts = ev.loc[(ev["task"] == task) & (ev["event"] == "abort"), ["time", "source", "line"]]
    spans = list(zip(_ms(w["start"]), _ms(w["end"]), [0] * len(w), w["where"], (w["ended_by"] == "granted").tolist()))
    spans += list(zip(_ms(aborts["time"]), _ms(aborts["time"]), [1] * len(aborts),
                      [f"{s}:{int(ln)}" for s, ln in zip(aborts["source"], aborts["line"])], [False] * len(aborts)))
    if not spans:
        return pd.DataFrame()
    spans.sort(key=lambda x: x[0])
    marks = sorted(_ms(saved.loc[saved["task"] == task, "time"]))
    gap_ms = gap_s * 1000
    out, cur = [], None
    for s, e, is_abort, where, granted in spans:
        if cur is not None:
            # saved work logged at or after the last want and no later than this one separates them
            progressed = bisect.bisect_left(marks, cur[1]) < bisect.bisect_right(marks, s)
            if progressed or s - cur[1] > gap_ms:
                out.append(cur)
                cur = None
        if cur is None:
            cur = [s, e, is_abort, where]
        else:
            cur[1] = max(cur[1], e)
            cur[2] += is_abort
        if grant_ends and granted:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    if not out:
        return pd.DataFrame()
    s, e, a, wh = zip(*out)
    start, end = np.asarray(s, dtype=np.int64), np.asarray(e, dtype=np.int64)
    return pd.DataFrame({"task": task, "start": pd.to_datetime(start, unit="ms").as_unit("ns"),
                         "end": pd.to_datetime(end, unit="ms").as_unit("ns"), "duration_s": (end - start) / 1000.0,
                         "aborts": np.asarray(a, dtype=np.int64), "where": pd.Series(wh, dtype=object)})


def gather(events: pd.DataFrame, bound_s: float = 3600.0) -> Evidence:
    """Measure everything the verdict rules need from parsed events."""
    att = attribute(events)
    ev = att.events
    waits = wait_intervals(att)
    saved = _saved_work(ev)
    sp = ev[(ev["event"] == "spend") & (ev["consumed"].fillna(0) > 0)]
    spends = pd.DataFrame({"time": sp["time"], "task": sp["task"].astype(object), "consumed": sp["consumed"],
                           "kind": sp["kind"].astype(object),
                           "where": [f"{s}:{int(ln)}" for s, ln in zip(sp["source"], sp["line"])]})
    rate, source, how = refill_rate(ev)
    kb = ev[ev["tokens_left"].notna()]
    keepa_balance = pd.DataFrame({"time": kb["time"], "balance": kb["tokens_left"],
                                  "where": [f"{s}:{int(ln)}" for s, ln in zip(kb["source"], kb["line"])]})
    start, end = (ev["time"].min(), ev["time"].max()) if len(ev) else (None, None)
    # a task that only waits in Celery retries (its calls gated elsewhere) is ours if it is a Keepa task
    retried = set(ev.loc[ev["event"] == "retry", "task"].dropna().astype(str)) & KEEPA_TASKS
    names = sorted(set(ev.loc[ev["event"].isin(TOKEN_EVENTS), "task"].dropna().astype(str)) | retried)
    cols = ["task", "start", "end", "duration_s", "aborts", "where"]
    def stretches(grant_ends):
        found = [f for n in names if len(f := _stretches(n, ev, waits, saved, bound_s, grant_ends))]
        return pd.concat(found, ignore_index=True)[cols] if found else pd.DataFrame([], columns=cols)

    hungry, unsaved = stretches(True), stretches(False)
    tasks = {}
    for name in names:
        e = ev[ev["task"] == name]
        w = waits[waits["task"] == name]
        s = spends[spends["task"] == name]
        r = att.runs[(att.runs["task"] == name)]
        tasks[name] = {
            "target": waited_target(e),
            "waits": int(len(w)),
            "max_wait_s": float(w["duration_s"].max()) if len(w) else 0.0,
            "grants": int((s["kind"] != "fetched").sum()) if len(s) else int((e["event"] == "grant").sum()),
            "tokens": float(s["consumed"].sum()),
            "saved": int((saved["task"] == name).sum()),
            "upserted": int(saved.loc[(saved["task"] == name) & (saved["what"] == "upserted"), "items"].fillna(0)
                            .sum()),
            "aborts": int((e["event"] == "abort").sum()),
            "runs": int((r["ended_by"] != "skip").sum()),
            "skips": int((att.skips["task"] == name).sum()) if len(att.skips) else 0,
            "role": "backfiller" if is_backfill(name) or (e["event"].isin(["checkpoint", "resume"])).any()
            else "upserter",
        }
    ev_info = Evidence(ev, att.runs, waits, saved, spends, rate, source, how, keepa_balance, tasks, hungry, unsaved, [],
                       start, end,
                       attribution={"ambiguous_lines": att.ambiguous, "unattributed_lines": att.unattributed,
                                    "inferred": att.inferred})
    ev_info.stalled = _stalls(ev_info, att)
    for name, t in tasks.items():
        t["stalled"] = any(s["task"] == name for s in ev_info.stalled)
    return ev_info


def _retry_comeback_s(runs: pd.DataFrame, task: str) -> float:
    """The longest this task's retried runs took to run again (0 if none did)."""
    mine = runs[(runs["task"] == task) & (runs["ended_by"] != "skip")].sort_values("start")
    ends, starts, how = mine["end"].tolist(), mine["start"].tolist(), mine["ended_by"].tolist()
    gaps = [(starts[i + 1] - ends[i]).total_seconds() for i in range(len(mine) - 1) if how[i] == "retry"]
    return max(gaps, default=0.0)


def _stalls(evd: Evidence, att) -> list:
    """Tasks that are dead at the end of the log, not waiting (see the module doc)."""
    runs = att.runs
    out = []
    if runs.empty or evd.end is None:
        return out
    for name in sorted(evd.tasks):     # only tasks seen on token lines: a dead restriction check is not ours
        mine = runs[(runs["task"] == name) & (runs["ended_by"] != "skip")].sort_values("start")
        if mine.empty:
            continue
        last = mine.iloc[-1]
        log_end = att.stream_end.get(last["stream"], evd.end)
        how, since = None, None
        if last["ended_by"] in ("died", "restart"):   # it never finished: it had work
            since = last["end"]
            how = {"died": f"its process {last['process']} died ({last['end_where'] or 'WorkerLostError'})",
                   "restart": f"the worker restarted under it ({last['end_where']})"}[last["ended_by"]]
        elif last["ended_by"] == "retry":   # it comes back after its countdown, or as late as its retries do
            said = last["retry_in"] if pd.notna(last["retry_in"]) else 0.0
            due = last["end"] + pd.Timedelta(seconds=max(_retry_comeback_s(runs, name), float(said)))
            if (log_end - due).total_seconds() >= max(STALL_MIN_S, SILENT_MIN_S):
                since = due
                how = f"its retry, due at {due}, never ran ({last['end_where']})"
        elif last["ended_by"] == "open" and last["silent"]:
            since = last["last"]
            how = f"its run on {last['process'] or 'the worker'} went silent after {last['where']}"
        if how is None:
            continue
        quiet = (log_end - since).total_seconds()
        if quiet < max(STALL_MIN_S, SILENT_MIN_S):
            continue
        sk = att.skips[(att.skips["task"] == name) & (att.skips["time"] > since)] if len(att.skips) else att.skips
        lock = len(sk) > 0
        fix = (f"clear {name}'s lock (the dead run still holds it: {len(sk)} ticks since logged 'already running'), "
               f"give the lock an expiry a little above the longest run, and restart the worker"
               if lock else f"restart {name} (nothing has run it since), and give its lock an expiry")
        out.append({"task": name, "since": since, "for_s": quiet, "how": how,
                    "lock_held": lock, "skips_since": int(len(sk)), "where": last["end_where"] or last["where"],
                    "fix": fix})
    return out
