"""Waits: how long each run waited for tokens, and how each wait ended.

A wait belongs to one run. It opens at the run's first ``wait`` line (``Insufficient
tokens ... Waiting``, ``Entered wait loop``, ``Low tokens``, ``Tokens critically low``,
...) or heartbeat, and every later wait or heartbeat line of the same run extends it:
a run that wakes, re-checks and logs again is still one wait. It ends only when that
run is granted (``Tokens recovered``, ``Burst threshold reached``, ``Priority Pass``, or a
call it made), gives up (``Exiting task``, ``Task Paused``, ``Request blocked``), or the
run ends (finished, its process died, the worker restarted, the process started
another task). Celery's ``retry: Retry in Ns`` is a wait of its own: the task gave its process
back to wait N seconds (``ended_by`` ``retried``; a later run of the same task comes back). A wait still open when the log ends is ``open``, or ``silent`` when its
run stopped logging long before the end (a stall, not a wait).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import codes, is_in, last_of, source_of, texts, texts_of

WANT = {"wait", "heartbeat"}
GRANT = {"grant"}
GIVE_UP = {"abort"}
COLUMNS = ["run", "task", "start", "end", "target", "balance", "ended_by", "duration_s", "lines", "source", "line"]


def _ns(t) -> np.datetime64:
    return pd.Timestamp(t).as_unit("ns").to_datetime64()


class _Comebacks:
    """When a retried run's task runs again: its next run in the stream (not a skip), else the log's
    end (still waiting), never before the countdown it announced."""

    def __init__(self, runs: pd.DataFrame, run_task: np.ndarray, stream_end: dict):
        self.stream_end = stream_end
        self.starts: dict[tuple, np.ndarray] = {}   # (task, stream) -> its runs' starts, sorted
        mine = (runs["ended_by"] != "skip").to_numpy()
        for key, g in runs["start"][mine].groupby([run_task[mine], runs["stream"].to_numpy()[mine]], dropna=False):
            self.starts[(None if key[0] != key[0] else key[0], int(key[1]))] = np.sort(g.to_numpy())

    def after(self, task, stream: int, t, countdown):
        starts = self.starts.get((task, stream), np.array([], "datetime64[ns]"))
        k = np.searchsorted(starts, t, "right")
        end = starts[k] if k < len(starts) else self.stream_end[stream]
        if countdown == countdown and countdown > 0:
            end = max(end, min(t + pd.Timedelta(seconds=countdown), self.stream_end[stream]))
        return end


def wait_intervals(att) -> pd.DataFrame:
    """One row per wait of every run in an ``Attribution``, worked out on the rows in (run, time)
    order without a loop over them.

    Among a run's wait, grant, give-up, call and retry lines, a wait opens at a wait line that
    does not follow one (or at a retry that does not), takes every wait line after it, and ends at
    the next grant, give-up, call that cost tokens, or retry; a grant or call with no wait open is
    no wait's. A wait still open when its run's lines end ends as its run did.
    """
    ev = att.events
    run = ev["run"].to_numpy()
    e_codes, e_names = codes(ev["event"])
    hit = lambda names: is_in(e_codes, e_names, names)
    want, retry = hit(WANT), hit({"retry"})
    consumed = ev["consumed"].to_numpy(dtype="float64", na_value=np.nan)
    closer = hit(GRANT | GIVE_UP) | (hit({"spend"}) & ~(consumed == 0))
    rows = np.flatnonzero((run >= 0) & (want | retry | closer))
    if not len(rows):
        return pd.DataFrame(columns=COLUMNS)
    rows = rows[np.lexsort((rows, run[rows]))]
    r, w, rt = run[rows], want[rows], retry[rows]
    prev_want = np.r_[False, (r[1:] == r[:-1]) & w[:-1]]
    starts = (w | rt) & ~prev_want
    inside = w | rt | prev_want                # wait lines, retries, and the closer of an open wait
    wid = np.cumsum(starts) - 1
    rows, r, w, rt, wid = rows[inside], r[inside], w[inside], rt[inside], wid[inside]
    if not len(rows):
        return _typed(pd.DataFrame([], columns=[c for c in COLUMNS if c != "duration_s"]))
    closing = ~w | rt                          # the row that ends its wait (a closer or a retry)
    first = np.flatnonzero(np.r_[True, wid[1:] != wid[:-1]])
    last = np.r_[first[1:] - 1, len(wid) - 1]
    nwait = len(first)
    times = ev["time"].to_numpy()
    targets = ev["target"].to_numpy(dtype="float64", na_value=np.nan)
    balance = ev["balance"].to_numpy(dtype="float64", na_value=np.nan)
    target = targets[rows[first]].copy()
    named = w & ~np.isnan(targets[rows])       # a later wait line's target replaces the first's
    g, v = last_of(wid[named], targets[rows[named]])
    target[g] = v
    lines = np.bincount(wid, weights=(w | rt).astype(np.float64), minlength=nwait).astype(np.int64)
    wait_run = r[first]
    # the last wait line of each wait (its end unless something ends it); ns holds any comeback exactly
    wl = np.flatnonzero(w)
    end = times[rows[first]].astype("datetime64[ns]")
    end[wid[wl]] = times[rows[wl]]             # rows in order: the last write is the last wait line
    how = np.full(nwait, None, dtype=object)
    runs = att.runs
    run_task = runs["task"].astype(object).where(runs["task"].notna(), None).to_numpy()
    run_stream = runs["stream"].to_numpy()
    lrow, lrun = rows[last], r[last]
    shut, retried = closing[last] & ~rt[last], closing[last] & rt[last]
    end[shut] = times[lrow[shut]]
    how[shut] = np.where(hit(GIVE_UP)[lrow[shut]], "gave_up", "granted")
    if retried.any():
        comebacks = _Comebacks(runs, run_task, att.stream_end)
        countdown = ev["wait"].to_numpy(dtype="float64", na_value=np.nan)
        for k in np.flatnonzero(retried).tolist():
            i = lrun[k]
            end[k] = _ns(comebacks.after(run_task[i], int(run_stream[i]), times[lrow[k]], countdown[lrow[k]]))
            how[k] = "retried"
    # a wait still open when its run's lines end ends as its run did
    left = np.flatnonzero(~closing[last])
    ids = np.unique(lrun[left])
    run_how = np.full(len(runs), None, dtype=object)
    run_end = np.full(len(runs), np.datetime64("NaT"), dtype="datetime64[ns]")
    ended_by, silent = runs["ended_by"].to_numpy(dtype=object)[ids], runs["silent"].to_numpy()[ids]
    is_open = ended_by == "open"
    run_how[ids] = np.where(is_open, np.where(silent, "silent", "open"),
                            np.where(ended_by == "finished", "run_finished", ended_by))
    live = ids[is_open & ~silent]
    run_end[live] = np.asarray([_ns(att.stream_end[int(st)]) for st in run_stream[live].tolist()],
                               dtype="datetime64[ns]").reshape(-1)
    done = ids[~is_open]
    run_end[done] = runs["end"].to_numpy()[done].astype("datetime64[ns]")
    how[left] = run_how[lrun[left]]
    ends_with_run = left[~np.isnat(run_end[lrun[left]])]
    end[ends_with_run] = run_end[lrun[ends_with_run]]
    # the waits in start order, built once as the frame's columns
    order = np.argsort(times[rows[first]], kind="stable")
    starts_at, wait_run, end = rows[first][order], wait_run[order], end[order]
    start = times[starts_at]
    duration = pd.TimedeltaIndex(end - start.astype(end.dtype)).total_seconds().to_numpy()
    return pd.DataFrame({
        "run": wait_run, "task": texts(run_task, wait_run), "start": start, "end": end, "target": target[order],
        "balance": balance[starts_at], "ended_by": texts_of(how[order]), "duration_s": duration,
        "lines": lines[order], "source": source_of(ev, starts_at), "line": ev["line"].to_numpy()[starts_at]},
        columns=COLUMNS)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df["start"], df["end"] = pd.to_datetime(df["start"]), pd.to_datetime(df["end"])
    df["duration_s"] = (df["end"] - df["start"]).dt.total_seconds()
    return df
