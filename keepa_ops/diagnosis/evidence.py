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

import io
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from .columns import codes, is_in
from .rate import refill_rate
from .readings import WAITING_EVENTS, usual_target
from .runs import SILENT_MIN_S, TOKEN_TASKS as KEEPA_TASKS, attribute, is_backfill
from .waits import wait_intervals

TOKEN_EVENTS = {"wait", "heartbeat", "grant", "spend", "abort", "429"}
WANT = {"wait", "heartbeat", "abort"}
STALL_MIN_S = 900.0
TEXT_DETAILS = {"iso", "reason"}   # detail fields that are texts (the others are numbers)


@dataclass
class Evidence:
    events: pd.DataFrame          # attributed: ``task`` filled, ``run`` added
    runs: pd.DataFrame
    waits: pd.DataFrame
    saved: pd.DataFrame           # time, task, what, items, source, line
    spends: pd.DataFrame          # the calls Keepa charged: time, task, consumed, kind, source, line
    rate: float | None
    rate_source: str
    rate_how: str
    keepa_balance: pd.DataFrame   # time, balance, source, line
    tasks: dict
    hungry: pd.DataFrame          # task, start, end, duration_s, aborts, source, line (of its first line)
    unsaved: pd.DataFrame         # the same columns
    stalled: list
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    attribution: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def capacity(self) -> float | None:
        return 60 * self.rate if self.rate else None


def _detail_values(details: np.ndarray, keys: tuple) -> dict:
    """``keys`` of each row's detail JSON, for equality tests: codes, where rows with equal values
    share a code and rows without the key have -1 (as None equals None).

    Read by arrow's JSON reader in one pass when each key holds what it should (a text for
    TEXT_DETAILS, else a number); any other value, or a malformed detail, and every row is read
    with ``json.loads`` instead, its values returned as they are (an object array).
    """
    text = [d if isinstance(d, str) and d else "{}" for d in details]
    schema = pa.schema([(k, pa.string() if k in TEXT_DETAILS else pa.float64()) for k in keys])
    try:
        table = pa_json.read_json(io.BytesIO("\n".join(text).encode("utf-8")),
                                  parse_options=pa_json.ParseOptions(explicit_schema=schema,
                                                                     unexpected_field_behavior="ignore"))
        if table.num_rows == len(text):
            return {k: pc.fill_null(pc.dictionary_encode(table.column(k)).combine_chunks().indices, -1)
                    .to_numpy(zero_copy_only=False).astype(np.int64) for k in keys}
    except (pa.ArrowInvalid, UnicodeEncodeError):
        pass
    rows = [json.loads(d) for d in text]
    rows = [r if isinstance(r, dict) else {} for r in rows]
    return {k: np.asarray([r.get(k) for r in rows], dtype=object) for k in keys}


def _changed(task: np.ndarray, *values: np.ndarray) -> np.ndarray:
    """Rows whose values differ from the previous row of the same task (a task's first row: changed)."""
    order = np.lexsort((np.arange(len(task)), task))
    t = task[order]
    same = np.r_[False, t[1:] == t[:-1]]
    for v in values:
        v = v[order]
        same[1:] &= np.asarray(v[1:] == v[:-1], dtype=bool)
    out = np.empty(len(task), bool)
    out[order] = ~same
    return out


def _saved_work(ev: pd.DataFrame) -> pd.DataFrame:
    """Saved work in time order (see the module doc): rows upserted, a checkpoint that moved from the task's
    last checkpoint or resume, a watermark that moved from the task's last one."""
    it = ev.loc[ev["event"].isin(["upsert", "checkpoint", "resume", "watermark", "watermark_loaded", "run_finish"])
                & ev["task"].notna(), ["time", "task", "event", "items", "kind", "detail", "source", "line"]]
    e = it["event"].astype(object).to_numpy()
    task_codes = codes(it["task"])[0]
    items = it["items"].to_numpy(dtype="float64", na_value=np.nan)
    kind = it["kind"].astype(object).to_numpy()
    what = np.full(len(it), None, dtype=object)
    with np.errstate(invalid="ignore"):
        what[((e == "upsert") & ~(items <= 0)) | ((e == "run_finish") & (kind == "ingest_complete") & (items > 0))] = \
            "upserted"
    details = it["detail"].to_numpy(dtype=object, na_value=None)
    for marks, keys, label in ((("checkpoint", "resume"), ("page", "chunk"), "checkpoint"),
                               (("watermark", "watermark_loaded"), ("iso",), "watermark")):
        rows = np.flatnonzero(np.isin(e, marks))
        if len(rows):
            vals = _detail_values(details[rows], keys)
            moved = _changed(task_codes[rows], *vals.values()) & (e[rows] == label)
            what[rows[moved]] = label
    keep = np.flatnonzero(what != None)  # noqa: E711 (an object array)
    sel = it.iloc[keep]
    return pd.DataFrame({"time": sel["time"].to_numpy(), "task": sel["task"].astype(object).to_numpy(),
                         "what": what[keep], "items": np.where(what[keep] == "upserted", items[keep], np.nan),
                         "source": sel["source"].to_numpy(), "line": sel["line"].to_numpy()},
                        columns=["time", "task", "what", "items", "source", "line"])


def _present(tasks: pd.Series, rows: np.ndarray) -> set:
    """The task names of the rows ``rows`` (a mask) of a task column, from its codes."""
    c, names = codes(tasks)
    return {str(names[k]) for k in np.flatnonzero(np.bincount(c[rows & (c >= 0)], minlength=len(names)))}


def _ms(series) -> np.ndarray:
    return pd.to_datetime(series).to_numpy().astype("datetime64[ms]").astype("int64")


def _stretches(task: str, waits: pd.DataFrame, aborts: pd.DataFrame, marks: np.ndarray, gap_s: float,
               grant_ends: bool, files: pd.Index):
    """Stretches in which ``task`` wanted tokens and saved nothing (a frame, empty if none): the span of its
    waits and give-ups (``aborts``: time, source, line) that no saved work (``marks``, ms, sorted) separates, no
    idle gap over ``gap_s`` and, if ``grant_ends``, no wait that ended in a grant. ``files``: the events'
    sources, the categories of the stretches' ``source``.

    Worked out without a loop: in start order, a stretch ends after a granted wait (if ``grant_ends``);
    between such ends, a stretch's end so far is the running maximum of the ends since the last grant
    (a break only happens where that maximum is at or before the next start), so a new stretch begins
    at a span that starts more than ``gap_s`` after it, or with saved work logged in between.
    """
    s = np.r_[_ms(waits["start"]), _ms(aborts["time"])]
    if not len(s):
        return pd.DataFrame()
    e = np.r_[_ms(waits["end"]), _ms(aborts["time"])]
    is_abort = np.r_[np.zeros(len(waits), np.int64), np.ones(len(aborts), np.int64)]
    granted = np.r_[(waits["ended_by"] == "granted").to_numpy(dtype=bool), np.zeros(len(aborts), bool)]
    source = np.r_[pd.Categorical(waits["source"], categories=files).codes,
                   pd.Categorical(aborts["source"], categories=files).codes]
    line = np.r_[waits["line"].to_numpy(), aborts["line"].to_numpy()]
    order = np.argsort(s, kind="stable")
    s, e, is_abort, granted, source, line = s[order], e[order], is_abort[order], granted[order], source[order], \
        line[order]
    forced = np.r_[True, granted[:-1] & grant_ends]        # a stretch begins after a granted wait
    seg = np.cumsum(forced) - 1
    upto = pd.Series(e).groupby(seg).cummax().to_numpy()   # the running maximum of the ends per segment
    prev_max = np.r_[0, upto[:-1]]
    progressed = np.searchsorted(marks, prev_max, "left") < np.searchsorted(marks, s, "right")
    begins = forced | progressed | (s - prev_max > gap_s * 1000)
    group = np.cumsum(begins) - 1
    first = np.flatnonzero(begins)
    last = np.r_[first[1:] - 1, len(s) - 1]
    start, end = s[first], upto[last]
    return pd.DataFrame({"task": task, "start": pd.to_datetime(start, unit="ms").as_unit("ns"),
                         "end": pd.to_datetime(end, unit="ms").as_unit("ns"), "duration_s": (end - start) / 1000.0,
                         "aborts": np.bincount(group, weights=is_abort).astype(np.int64),
                         "source": pd.Categorical.from_codes(source[first], categories=files), "line": line[first]})


def gather(events: pd.DataFrame, bound_s: float = 3600.0) -> Evidence:
    """Measure everything the verdict rules need from parsed events."""
    att = attribute(events)
    ev = att.events
    waits = wait_intervals(att)
    saved = _saved_work(ev)
    # each frame takes only the columns it keeps (a selection of every column copies them all)
    sp = ev.loc[(ev["event"] == "spend") & (ev["consumed"].fillna(0) > 0),
                ["time", "task", "consumed", "kind", "source", "line"]]
    spends = pd.DataFrame({"time": sp["time"], "task": sp["task"].astype(object), "consumed": sp["consumed"],
                           "kind": sp["kind"].astype(object), "source": sp["source"], "line": sp["line"]})
    rate, source, how = refill_rate(ev)
    kb = ev.loc[ev["tokens_left"].notna(), ["time", "tokens_left", "source", "line"]]
    keepa_balance = pd.DataFrame({"time": kb["time"], "balance": kb["tokens_left"], "source": kb["source"],
                                  "line": kb["line"]})
    start, end = (ev["time"].min(), ev["time"].max()) if len(ev) else (None, None)
    # a task that only waits in Celery retries (its calls gated elsewhere) is ours if it is a Keepa task
    retried = _present(ev["task"], (ev["event"] == "retry").to_numpy()) & KEEPA_TASKS
    names = sorted(_present(ev["task"], ev["event"].isin(TOKEN_EVENTS).to_numpy()) | retried)
    cols = ["task", "start", "end", "duration_s", "aborts", "source", "line"]
    ab = ev.loc[ev["event"] == "abort", ["time", "task", "source", "line"]]
    ab = ab.assign(task=ab["task"].astype(object))
    by_task = {n: g for n, g in ab.groupby("task", sort=False)}
    no_abort = ab.iloc[:0]
    waits_of = {n: g for n, g in waits.groupby("task", sort=False)} if len(waits) else {}
    marks_of = {n: np.sort(_ms(g["time"])) for n, g in saved.groupby("task", sort=False)} if len(saved) else {}

    def stretches(grant_ends):
        found = [f for n in names if len(f := _stretches(n, waits_of.get(n, waits.iloc[:0]), by_task.get(n, no_abort),
                                                         marks_of.get(n, np.array([], np.int64)), bound_s,
                                                         grant_ends, files))]
        return pd.concat(found, ignore_index=True)[cols] if found else pd.DataFrame([], columns=cols)

    files = pd.Index(codes(ev["source"])[1])
    hungry, unsaved = stretches(True), stretches(False)
    tasks = {}
    # the per-task figures read the events as codes (no copy of their rows), the spends by the codes of
    # their tasks, and the smaller frames as they are
    tc, tnames = codes(ev["task"])
    ec, enames = codes(ev["event"])
    event_is = lambda names: is_in(ec, enames, names)
    targets = ev["target"].to_numpy(dtype="float64", na_value=np.nan)
    waiting, aborts, grants, marks = event_is(set(WAITING_EVENTS)), event_is({"abort"}), event_is({"grant"}), \
        event_is({"checkpoint", "resume"})
    stc, stnames = codes(sp["task"])
    fetched = (spends["kind"] == "fetched").to_numpy()
    for name in names:
        mine = tc == (tnames.index(name) if name in tnames else -2)
        s_mine = stc == (stnames.index(name) if name in stnames else -2)
        w = waits_of.get(name, waits.iloc[:0])
        r = att.runs[(att.runs["task"] == name)]
        sv = saved[saved["task"] == name]
        tasks[name] = {
            "target": usual_target(pd.Series(targets[mine & waiting])),
            "waits": int(len(w)),
            "max_wait_s": float(w["duration_s"].max()) if len(w) else 0.0,
            "grants": int((s_mine & ~fetched).sum()) if s_mine.any() else int((mine & grants).sum()),
            "tokens": float(spends["consumed"][s_mine].sum()),
            "saved": int(len(sv)),
            "upserted": int(sv.loc[sv["what"] == "upserted", "items"].fillna(0).sum()),
            "aborts": int((mine & aborts).sum()),
            "runs": int((r["ended_by"] != "skip").sum()),
            "skips": int((att.skips["task"] == name).sum()) if len(att.skips) else 0,
            "role": "backfiller" if is_backfill(name) or (mine & marks).any() else "upserter",
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
