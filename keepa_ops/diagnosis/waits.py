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

WANT = {"wait", "heartbeat"}
GRANT = {"grant"}
GIVE_UP = {"abort"}
COLUMNS = ["run", "task", "start", "end", "target", "balance", "ended_by", "duration_s", "lines", "where"]


def _comeback(runs, run, t, countdown, stream_end):
    """When a retried run's task runs again: its next run in the stream, else the log's end (still
    waiting), never before the countdown it announced."""
    later = [r.start for r in runs if r.task == run.task and r.stream == run.stream and r.start > t
             and r.ended_by != "skip"]
    end = min(later) if later else stream_end[run.stream]
    if countdown == countdown and countdown > 0:
        end = max(end, min(t + pd.Timedelta(seconds=countdown), stream_end[run.stream]))
    return end


def wait_intervals(att) -> pd.DataFrame:
    """One row per wait of every run in an ``Attribution``: one pass over the rows in
    (run, time) order."""
    ev = att.events
    keep = ev[(ev["run"] >= 0) & ev["event"].isin(WANT | GRANT | GIVE_UP | {"spend", "run_finish", "retry"})]
    keep = keep.iloc[np.lexsort((np.arange(len(keep)), keep["run"].to_numpy()))]
    cols = [c for c in COLUMNS if c != "duration_s"]
    if keep.empty:
        return pd.DataFrame(columns=COLUMNS)
    runs = att.run_list
    rows = []
    run_ids = keep["run"].to_numpy()
    times = keep["time"].to_numpy()   # numpy datetimes: boxing a Timestamp per row cost seconds on big logs
    fields = zip(run_ids, times, keep["event"].astype(object), keep["target"], keep["balance"], keep["consumed"],
                 keep["source"].astype(object), keep["line"], keep["wait"])
    open_, current = None, None

    def close_open(run_id):
        r = runs[run_id]
        how = r.ended_by
        if how == "open":
            if r.silent:
                open_[6] = "silent"
            else:
                open_[6], open_[3] = "open", att.stream_end[r.stream]
        else:
            open_[6] = {"finished": "run_finished"}.get(how, how)
            if r.end is not None and r.end == r.end:
                open_[3] = r.end
        rows.append(open_)

    for run_id, t, e, target, bal, consumed, src, line, wait in fields:
        if run_id != current:
            if open_ is not None:
                close_open(current)
            open_, current = None, run_id
        if e == "retry":
            if open_ is None:
                open_ = [run_id, runs[run_id].task, t, t, target, bal, None, 0, f"{src}:{int(line)}"]
            open_[3], open_[6] = _comeback(runs, runs[run_id], t, wait, att.stream_end), "retried"
            open_[7] += 1
            rows.append(open_)
            open_ = None
        elif e in WANT:
            if open_ is None:
                open_ = [run_id, runs[run_id].task, t, t, target, bal, None, 0, f"{src}:{int(line)}"]
            open_[3] = t
            open_[7] += 1
            if target == target:
                open_[4] = target
        elif open_ is not None and (e in GRANT or e in GIVE_UP or (e == "spend" and not (consumed == 0))):
            open_[3] = t
            open_[6] = "gave_up" if e in GIVE_UP else "granted"
            rows.append(open_)
            open_ = None
    if open_ is not None:
        close_open(current)
    df = pd.DataFrame(rows, columns=cols)
    df["start"], df["end"] = pd.to_datetime(df["start"]), pd.to_datetime(df["end"])
    df["duration_s"] = (df["end"] - df["start"]).dt.total_seconds()
    return df.sort_values("start", kind="stable").reset_index(drop=True)
