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
SILENT_MIN_S = 900.0     # a waiting run this long quiet (and far past its own next check) went silent

COLUMNS = ["run", "task", "start", "end", "target", "balance", "ended_by", "duration_s", "lines", "where"]


def silent_after(announced_s: float | None, gaps: np.ndarray) -> float:
    """How long a waiting run may be quiet before it counts as silent: well past the re-check it
    announced and past its own usual rhythm, and never less than ``SILENT_MIN_S``."""
    usual = 3 * float(np.median(gaps)) if len(gaps) else 0.0
    announced = 2 * announced_s + 120 if announced_s and announced_s == announced_s else 0.0
    return max(SILENT_MIN_S, usual, announced)


def wait_intervals(att) -> pd.DataFrame:
    """One row per wait of every run in an ``Attribution``."""
    ev = att.events
    runs = att.runs.set_index("run") if len(att.runs) else att.runs
    log_end = {s: t for s, t in ev.groupby(ev["stream"].cat.codes if hasattr(ev["stream"], "cat")
                                             else pd.factorize(ev["stream"])[0])["time"].max().items()}
    keep = ev[(ev["run"] >= 0) & ev["event"].isin(WANT | GRANT | GIVE_UP | {"spend", "run_finish"})]
    rows = []
    for run_id, g in keep.groupby("run", sort=False):
        r = runs.loc[run_id]
        open_ = None
        times = g["time"].tolist()
        for t, e, target, bal, consumed, wait, kind, src, line in zip(
                times, g["event"], g["target"], g["balance"], g["consumed"], g["wait"], g["kind"], g["source"],
                g["line"]):
            if e in WANT:
                if open_ is None:
                    open_ = {"run": run_id, "task": r["task"], "start": t, "end": t, "target": target,
                             "balance": bal, "lines": 0, "where": f"{src}:{int(line)}", "last_wait": wait}
                open_["end"] = t
                open_["lines"] += 1
                open_["last_wait"] = wait
                if target == target:
                    open_["target"] = target
            elif open_ is not None and (e in GRANT or e in GIVE_UP or (e == "spend" and not (consumed == 0))):
                open_["end"] = t
                open_["ended_by"] = "gave_up" if e in GIVE_UP else "granted"
                rows.append(open_)
                open_ = None
        if open_ is not None:
            how = r["ended_by"]
            if how == "open":
                gaps = np.diff(np.asarray(times, dtype="datetime64[ms]")).astype("float64") / 1000.0
                end = log_end[r["stream"]]
                quiet = (end - max(open_["end"], r["last"])).total_seconds()   # 'last' counts lines it may have written
                if quiet > silent_after(r["announced"], gaps[gaps > 0]):
                    open_["ended_by"] = "silent"
                else:
                    open_["ended_by"], open_["end"] = "open", end
            else:
                open_["ended_by"] = {"finished": "run_finished"}.get(how, how)
                if r["end"] is not None and r["end"] == r["end"]:
                    open_["end"] = r["end"]
            rows.append(open_)
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "duration_s"] + ["last_wait"])
    df["duration_s"] = (df["end"] - df["start"]).dt.total_seconds() if len(df) else pd.Series(dtype="float64")
    return df.drop(columns=["last_wait"])
