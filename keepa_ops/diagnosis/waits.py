"""Waits: how long each run waited for tokens, and how each wait ended.

A wait belongs to one run. It opens at the run's first ``wait`` line (``Insufficient
tokens ... Waiting``, ``Entered wait loop``, ``Low tokens``, ``Tokens critically low``,
...) or heartbeat, and every later wait or heartbeat line of the same run extends it:
a run that wakes, re-checks and logs again is still one wait. It ends only when that
run is granted (``Tokens recovered``, ``Burst threshold reached``, ``Priority Pass``, or a
call it made), gives up (``Exiting task``, ``Task Paused``, ``Request blocked``), or the
run ends (finished, its process died, the worker restarted, the process started
another task). A wait still open when the log ends is ``open``, or ``silent`` when its
run stopped logging long before the end (a stall, not a wait).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

WANT = {"wait", "heartbeat"}
GRANT = {"grant"}
GIVE_UP = {"abort"}
COLUMNS = ["run", "task", "start", "end", "target", "balance", "ended_by", "duration_s", "lines", "where"]


def wait_intervals(att) -> pd.DataFrame:
    """One row per wait of every run in an ``Attribution``: one pass over the rows in
    (run, time) order."""
    ev = att.events
    keep = ev[(ev["run"] >= 0) & ev["event"].isin(WANT | GRANT | GIVE_UP | {"spend", "run_finish"})]
    keep = keep.iloc[np.lexsort((np.arange(len(keep)), keep["run"].to_numpy()))]
    cols = [c for c in COLUMNS if c != "duration_s"]
    if keep.empty:
        return pd.DataFrame(columns=COLUMNS)
    runs = att.run_list
    rows = []
    run_ids = keep["run"].to_numpy()
    times = keep["time"].tolist()
    fields = zip(run_ids, times, keep["event"].astype(object), keep["target"], keep["balance"], keep["consumed"],
                 keep["source"].astype(object), keep["line"])
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

    for run_id, t, e, target, bal, consumed, src, line in fields:
        if run_id != current:
            if open_ is not None:
                close_open(current)
            open_, current = None, run_id
        if e in WANT:
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
