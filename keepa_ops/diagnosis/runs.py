"""Runs: which execution of which task each token line belongs to.

A *run* is one task on one pool process, from its start until its own finish (the task's
``finished`` line or Celery's ``succeeded``/``failed``/``raised``), Celery's ``retry`` (the
execution gives its process back and comes again after the countdown, as a new run), its process's death
(``Process 'ForkPoolWorker-N' ... exited``), a worker restart, or the next task that
process starts. A duplicate that finds the task's lock held (``is already running``) is
a *skip* of that task, never the end of the run that holds the lock.

Attribution, per stream (one rotated set of files):

* a line that names its worker process belongs to the run open on that process (MainProcess
  too: a solo pool runs its tasks there; Celery's pool lines about processes are not runs);
* a line that names no process (``basicConfig`` formats, Python's default, our JSON) and
  names no task belongs to one of the runs open in its stream, bracketed by the task
  modules' own start/finish lines: the only one open; else the run whose own task line
  came just before it (within CALLER_S, and its target does not contradict); else the one
  whose target it repeats; for a grant that names no target (Priority Pass), the one run not
  waiting for a target; for a call, the run just granted; else the task whose own module logged last
  (not a skip, not Celery's line about it); else it stays unattributed and is counted
  as ambiguous. A call given by a weak rule, where one backfill run and one other run could
  have made it, goes to the backfill if its checkpoint line follows within seconds, else to
  the other.
* a run whose start is not in the log (a rotation cut it off) takes its task from a line
  that names it, from what only one task logs (backfill checkpoints), or from the skips
  of the task whose lock it holds; each such inference is stated in ``inferred``.

Invariant: every event row gets at most one run; a row in no run keeps its own task.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Lines only the backfill task logs, and lines only a deal-feed task (upserter, ingestor) logs.
BACKFILL_EVENTS = {"checkpoint", "resume"}
FEED_EVENTS = {"found", "upsert", "watermark", "watermark_loaded", "stop_trigger"}
POOL_PROCESSES = {"MainProcess", "Beat"}
POOL_EVENTS = {"worker_exit", "worker_lost", "worker_ready", "worker_stop"}
QUIET_DEATH_S = 900.0
SILENT_MIN_S = 900.0     # an open run this long quiet (and far past its own next check) went silent
CALLER_S = 2.0      # a token line this soon after a task's own line answers that task
CHECKPOINT_AFTER = pd.Timedelta(seconds=15)   # a backfill call's checkpoint follows it this soon
# The legacy pipeline's tasks that call Keepa (legacy-logs spec). A line that names no task is
# given to one of their open runs before any other task's (the Janitor, restriction checks), as
# is any task seen naming itself on a token line.
TOKEN_TASKS = {"update_recent_deals", "backfill_deals", "smart_ingestor"}
TOKEN_EVENTS = {"wait", "heartbeat", "grant", "spend", "abort", "429", "sync"}


def is_backfill(task: str | None) -> bool:
    return bool(task) and "backfill" in task


@dataclass
class Run:
    id: int
    stream: int
    process: str | None
    task: str | None
    start: pd.Timestamp
    where: str                  # file:line of its first line
    started_in_log: bool        # False: its start was before the log (or its rotation) began
    end: pd.Timestamp | None = None
    ended_by: str = "open"      # finished | retry | died | restart | superseded | open
    last: pd.Timestamp | None = None
    end_where: str | None = None
    last_target: float | None = None
    hints: set = field(default_factory=set)
    maybe: pd.Timestamp | None = None   # the last line that could have been this run's (given to another
                                        # by a weak rule, or left ambiguous): it was not silent until then
    announced: float | None = None      # the re-check its last (possible) wait line announced, in seconds
    silent: bool = False                # still open at the end, but quiet for far longer than it should be
    waiting: bool = False               # in a wait for a logged target (its grant will repeat that target)


    @property
    def seen(self) -> pd.Timestamp:
        """The last moment the log shows it (or a line that may have been its)."""
        return self.last if self.maybe is None else max(self.last, self.maybe)


def silent_after(announced_s: float | None, usual_gap_s: float | None) -> float:
    """How long an open run may be quiet before it counts as silent: well past the re-check it
    announced and three of its usual gaps between lines, and never less than ``SILENT_MIN_S``."""
    usual = 3 * usual_gap_s if usual_gap_s and usual_gap_s == usual_gap_s else 0.0
    announced = 2 * announced_s + 120 if announced_s and announced_s == announced_s else 0.0
    return max(SILENT_MIN_S, usual, announced)


def stream_codes(ev: pd.DataFrame) -> np.ndarray:
    """Each row's stream as a small integer."""
    s = ev["stream"]
    return (s.cat.codes if hasattr(s, "cat") else pd.Series(pd.factorize(s)[0])).to_numpy()


@dataclass
class Attribution:
    """Events with their ``run`` (-1: none) and ``task`` filled in; the runs; the skips."""

    events: pd.DataFrame
    runs: pd.DataFrame
    skips: pd.DataFrame          # time, task, stream, where: every 'is already running'
    ambiguous: int
    unattributed: int
    inferred: list = field(default_factory=list)
    run_list: list = field(default_factory=list)   # the Run objects behind ``runs``, by id
    stream_end: dict = field(default_factory=dict)  # stream code -> the time of its last line


def _where(src, line) -> str:
    return f"{src}:{int(line)}" if line == line else str(src)


def attribute(events: pd.DataFrame) -> Attribution:
    """Split ``events`` (any order) into runs; see the module doc for the rules."""
    ev = events.sort_values("time", kind="stable").reset_index(drop=True)
    n = len(ev)
    times = ev["time"].to_numpy()  # numpy datetimes in the loop; Timestamps for the runs after it (_box)
    kinds = ev["event"].astype(object).tolist()
    procs = ev["process"].astype(object).where(ev["process"].notna(), None).tolist()
    tasks = ev["task"].astype(object).where(ev["task"].notna(), None).tolist()
    streams = stream_codes(ev).tolist()
    srcs = ev["source"].astype(object).tolist()
    lines = ev["line"].tolist()
    targets = ev["target"].tolist()
    kind_of = ev["kind"].astype(object).tolist()
    details = ev["detail"]  # read only at the few lines that need it (a process's exit): not boxed per line

    runs: list[Run] = []
    run_of = np.full(n, -1, dtype=np.int64)
    on_process: dict[tuple, Run] = {}           # (stream, process) -> open run
    by_task: dict[int, dict[str, Run]] = {}     # stream -> task -> open run (streams without processes)
    last_named: dict[int, str] = {}
    named_at: dict[int, pd.Timestamp] = {}
    pending_skips: dict[tuple, int] = {}
    skips = []
    lost_at: dict[int, list] = {}               # stream -> times of lost workers it could not name
    ambiguous = unattributed = 0
    token_tasks = set(TOKEN_TASKS)
    granted: dict[int, Run] = {}                # stream -> the run whose grant awaits its call
    granted_weak: dict[int, bool] = {}
    doubtful: list = []                         # calls given by a weak rule: (row, candidates, pick)
    saves: dict[int, list] = {}                 # backfill run -> times of its checkpoint lines

    def open_run(i, stream, process, task, in_log=True):
        r = Run(len(runs), stream, process, task, times[i], _where(srcs[i], lines[i]), in_log, last=times[i])
        runs.append(r)
        return r

    def close(r: Run, i, how):
        if r.end is None:
            r.end, r.ended_by, r.end_where = times[i], how, _where(srcs[i], lines[i])
            if how == "retry":  # the countdown Celery announced ("Retry in Ns"), if it did
                r.announced = waits[i] if waits[i] == waits[i] else None

    waits = ev["wait"].tolist()

    def take(r: Run, i):
        run_of[i] = r.id
        r.last = times[i]
        if waits[i] == waits[i] and kinds[i] == "wait":
            r.announced = waits[i]
        if targets[i] == targets[i] and kinds[i] in ("wait", "heartbeat", "abort"):
            r.last_target = targets[i]
        if kinds[i] in ("wait", "heartbeat"):
            r.waiting = targets[i] == targets[i] or r.waiting
        elif kinds[i] in ("grant", "spend", "abort", "run_finish", "retry"):
            r.waiting = False
        if kinds[i] in BACKFILL_EVENTS:
            r.hints.add("backfill")
        elif kinds[i] in FEED_EVENTS:
            r.hints.add("feed")

    for i in range(n):
        e, proc, task, st = kinds[i], procs[i], tasks[i], streams[i]
        if e in POOL_EVENTS:
            if e == "worker_exit":
                d = details.iat[i]
                name = (json.loads(d) if isinstance(d, str) and d else {}).get("reason")
                r = on_process.pop((st, name), None)
                if r is not None:
                    close(r, i, "died")
                else:
                    lost_at.setdefault(st, []).append(times[i])
            elif e == "worker_lost":
                lost_at.setdefault(st, []).append(times[i])
            elif e in ("worker_ready", "worker_stop"):
                for key in [k for k in on_process if k[0] == st]:
                    close(on_process.pop(key), i, "restart")
                for r in by_task.pop(st, {}).values():
                    close(r, i, "restart")
            continue
        if e == "received":        # MainProcess took the message; no run has begun
            continue
        if e == "skip" and task:
            skips.append((times[i], task, st, _where(srcs[i], lines[i])))
        if proc is not None:                       # a pool process: its own run
            key = (st, proc)
            cur = on_process.get(key)
            if e in ("run_start", "skip"):
                if cur is not None:
                    close(cur, i, "superseded")
                cur = on_process[key] = open_run(i, st, proc, task)
                if e == "skip":
                    cur.ended_by = "skip"
                take(cur, i)
            elif e == "run_finish":
                if cur is not None:
                    if cur.task is None:
                        cur.task = task
                    take(cur, i)
                    close(cur, i, "skip" if cur.ended_by == "skip" else "finished")
                    del on_process[key]
            elif e == "retry":
                if cur is not None:
                    if cur.task is None:
                        cur.task = task
                    take(cur, i)
                    close(cur, i, "retry")
                    del on_process[key]
            else:
                if cur is None:
                    cur = on_process[key] = open_run(i, st, proc, task, in_log=False)
                elif cur.task is None and task:
                    cur.task = task
                take(cur, i)
            continue
        # no process named: bracket by the tasks' own lines within the stream
        open_ = by_task.setdefault(st, {})
        if task:
            if e != "skip" and kind_of[i] != "celery_task":   # the task's own module logged this
                last_named[st], named_at[st] = task, times[i]
            if e in TOKEN_EVENTS:
                token_tasks.add(task)
            if e == "skip":
                pending_skips[(st, task)] = pending_skips.get((st, task), 0) + 1
                continue
            if e == "run_finish" and kind_of[i] == "celery_task" and pending_skips.get((st, task), 0) > 0:
                pending_skips[(st, task)] -= 1       # the skip's own 'succeeded'
                continue
            cur = open_.get(task)
            if e == "run_start":
                if cur is not None:
                    close(cur, i, "superseded")
                cur = open_[task] = open_run(i, st, None, task)
            elif cur is None:
                if e == "run_finish":
                    continue
                cur = open_[task] = open_run(i, st, None, task, in_log=False)
            take(cur, i)
            if e in BACKFILL_EVENTS:
                saves.setdefault(cur.id, []).append(times[i])
            if e in ("run_finish", "retry"):
                close(cur, i, "finished" if e == "run_finish" else "retry")
                del open_[task]
            continue
        cands = list(open_.values())
        if e in BACKFILL_EVENTS:
            cands = [r for r in cands if is_backfill(r.task)]
        elif e in FEED_EVENTS:
            cands = [r for r in cands if not is_backfill(r.task)]
        if not cands:
            unattributed += 1
            continue
        if any(r.task in token_tasks for r in cands):
            cands = [r for r in cands if r.task in token_tasks]
        pick, weak = None, False
        if len(cands) == 1:
            pick = cands[0]
        else:
            caller = open_.get(last_named.get(st))
            if caller in cands and (times[i] - named_at[st]) / np.timedelta64(1, "s") <= CALLER_S and (
                    caller.last_target is None or caller.last_target == targets[i] or targets[i] != targets[i]):
                pick = caller               # the token manager answering the task line just before it
            if pick is None and targets[i] == targets[i]:
                same = [r for r in cands if r.last_target == targets[i]]
                if len(same) == 1:
                    pick = same[0]
            if pick is None and e == "grant" and targets[i] != targets[i]:
                idle = [r for r in cands if not r.waiting]
                if len(idle) == 1:
                    pick = idle[0]          # a run waiting for a target is granted in words that repeat it
            if pick is None and e in ("spend", "429") and granted.get(st) in cands:
                pick = granted[st]          # the call the run just granted makes
                weak = granted_weak.get(st, False)
            if pick is None:
                pick, weak = open_.get(last_named.get(st)), True
                if pick not in cands:
                    pick = None
        if pick is None or weak:
            for r in cands:
                if r is not pick:
                    r.maybe = times[i]
                    if waits[i] == waits[i] and e == "wait":
                        r.announced = max(r.announced or 0.0, waits[i])
            if e == "spend":
                doubtful.append((i, cands, pick))
        if pick is None:
            ambiguous += 1
            continue
        take(pick, i)
        if e == "grant":
            granted[st], granted_weak[st] = pick, weak
        elif e in ("spend", "429"):
            granted.pop(st, None)
        if e in BACKFILL_EVENTS:
            saves.setdefault(pick.id, []).append(times[i])
        if e in BACKFILL_EVENTS or e in FEED_EVENTS:
            last_named[st], named_at[st] = pick.task, times[i]

    _box(runs, lost_at, saves, skips)
    # a run still open after its stream's pool lost a process it cannot name, that never logged
    # again and stayed quiet a long while: it was the one that died
    stream_end: dict[int, pd.Timestamp] = {}
    if len(times):  # each stream's last line (rows are in time order)
        last_row = pd.Series(np.arange(len(times))).groupby(np.asarray(streams)).last()
        stream_end = {int(st): pd.Timestamp(times[i]) for st, i in last_row.items()}
    for r in runs:
        if r.end is not None:
            continue
        after = [t for t in lost_at.get(r.stream, []) if t >= r.seen]
        if after and (stream_end[r.stream] - r.seen).total_seconds() > QUIET_DEATH_S:
            r.end, r.ended_by, r.end_where = after[0], "died", "a WorkerLostError that names no process"

    # A backfill call is followed within seconds by its checkpoint line; a call given to the
    # backfill or the feed by a weak rule follows that evidence instead.
    for i, cands, pick in doubtful:
        bf = [r for r in cands if is_backfill(r.task)]
        feed = [r for r in cands if not is_backfill(r.task)]
        if len(bf) != 1 or len(feed) != 1:
            continue
        marks = saves.get(bf[0].id, [])     # in time order
        t = pd.Timestamp(times[i])
        k = bisect.bisect_left(marks, t)
        owner = bf[0] if k < len(marks) and marks[k] <= t + CHECKPOINT_AFTER else feed[0]
        if pick is None:
            ambiguous -= 1
        run_of[i] = owner.id

    _mark_silent(runs, run_of, ev["time"], stream_end)
    inferred = _infer_tasks(runs, skips)
    run_task = {r.id: r.task for r in runs}
    filled = [run_task.get(int(k)) if k >= 0 else tasks[i] for i, k in enumerate(run_of)]
    ev["run"] = run_of
    ev["task"] = pd.Categorical(filled)
    table = pd.DataFrame([{
        "run": r.id, "stream": r.stream, "process": r.process, "task": r.task, "start": r.start, "end": r.end,
        "last": r.seen, "ended_by": r.ended_by, "where": r.where, "end_where": r.end_where,
        "started_in_log": r.started_in_log, "silent": r.silent, "retry_in": r.announced if r.ended_by == "retry"
        else None} for r in runs],
        columns=["run", "stream", "process", "task", "start", "end", "last", "ended_by", "where", "end_where",
                 "started_in_log", "silent", "retry_in"])
    sk = pd.DataFrame(skips, columns=["time", "task", "stream", "where"])
    return Attribution(ev, table, sk, ambiguous, unattributed, inferred, runs, stream_end)


def _box(runs: list[Run], lost_at: dict, saves: dict, skips: list) -> None:
    """The loop's numpy datetimes as Timestamps, in place: only the runs' own times, the lost
    workers', the checkpoints' and the skips' (a few per run), never one per line."""
    ts = pd.Timestamp
    for r in runs:
        r.start, r.last = ts(r.start), ts(r.last)
        r.end = None if r.end is None else ts(r.end)
        r.maybe = None if r.maybe is None else ts(r.maybe)
    for d in (lost_at, saves):
        for k, v in d.items():
            d[k] = [ts(t) for t in v]
    skips[:] = [(ts(t), *rest) for t, *rest in skips]


def _mark_silent(runs: list[Run], run_of: np.ndarray, times: pd.Series, stream_end: dict) -> None:
    """An open run that has been quiet past ``silent_after`` of its own rhythm went silent."""
    rows = np.flatnonzero((run_of >= 0) & times.notna().to_numpy())
    if not len(rows):
        return
    ms = times.to_numpy().astype("datetime64[ms]").astype("int64").astype("float64")[rows]
    ids = run_of[rows]
    order = np.lexsort((np.arange(len(ids)), ids))
    ids, ms = ids[order], ms[order]
    same = ids[1:] == ids[:-1]
    gaps = np.diff(ms) / 1000.0
    keep = same & (gaps > 0)
    usual = pd.Series(gaps[keep]).groupby(ids[1:][keep]).median().to_dict()
    for r in runs:
        if r.end is None:
            quiet = (stream_end[r.stream] - r.seen).total_seconds()
            r.silent = quiet > silent_after(r.announced, usual.get(r.id))


def _infer_tasks(runs: list[Run], skips: list) -> list[str]:
    """Name the runs whose start the log lacks, where the log says whose they are."""
    said = []
    names = {r.task for r in runs if r.task} | {s[1] for s in skips}
    unnamed = [r for r in runs if r.task is None and r.ended_by != "skip"]
    if not unnamed:
        return said
    skip_times: dict[tuple, list] = {}
    for t, task, st, _ in skips:
        skip_times.setdefault((st, task), []).append(t)
    # per task, its named runs by start with the running maximum of their ends: an overlap query
    spans: dict[str, tuple] = {}
    for task in names:
        own = sorted((o.start, o.end if o.end is not None else o.last) for o in runs
                     if o.task == task and o.ended_by != "skip")
        spans[task] = ([a for a, _ in own], list(np.maximum.accumulate([b for _, b in own])) if own else [])

    def busy(task, start, end):
        starts, max_end = spans.get(task, ([], []))
        k = bisect.bisect_right(starts, end)
        return k > 0 and max_end[k - 1] >= start

    for r in unnamed:
        if "backfill" in r.hints:
            cands = sorted(t for t in names if is_backfill(t)) or sorted(t for t in TOKEN_TASKS if is_backfill(t))
            why = "it saves backfill checkpoints"
        else:
            # the lock holder: a task whose every tick skips while this run is open, with no run of its own
            end = r.end if r.end is not None else r.last
            held = set()
            for (st, task), ts in skip_times.items():
                if st == r.stream and bisect.bisect_right(ts, end) > bisect.bisect_left(ts, r.start):
                    held.add(task)
            cands = sorted(t for t in held if not busy(t, r.start, end))
            why = "every tick of it logged 'already running' while this run was open, and no other run of it was"
            if not cands and "feed" in r.hints:
                cands = sorted(t for t in names if not is_backfill(t))
                why = "it loads and moves the deal watermark"
        if len(cands) == 1:
            r.task = cands[0]
            said.append(f"{r.where}: the run on {r.process or 'this stream'} began before the log; "
                        f"taken as {r.task} because {why}.")
    return said
