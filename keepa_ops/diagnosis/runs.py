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

from .columns import codes, is_in, last_of, where_at

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


@dataclass(slots=True)
class Run:
    id: int
    stream: int
    process: str | None
    task: str | None
    start: np.datetime64        # times are numpy datetimes in the events' unit: boxed only in the ``runs`` table
    where: str                  # file:line of its first line
    started_in_log: bool        # False: its start was before the log (or its rotation) began
    end: np.datetime64 | None = None
    ended_by: str = "open"      # finished | retry | died | restart | superseded | open
    last: np.datetime64 | None = None
    end_where: str | None = None
    last_target: float | None = None
    hints: set = field(default_factory=set)
    maybe: np.datetime64 | None = None  # the last line that could have been this run's (given to another
                                        # by a weak rule, or left ambiguous): it was not silent until then
    announced: float | None = None      # the re-check its last (possible) wait line announced, in seconds
    silent: bool = False                # still open at the end, but quiet for far longer than it should be
    waiting: bool = False               # in a wait for a logged target (its grant will repeat that target)


    @property
    def seen(self) -> np.datetime64:
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


# How a row of a pool process moves its run: the row types of the process path.
_START, _END, _OTHER, _DIED, _RESTART = range(5)


@dataclass
class _ProcessRuns:
    """The runs of the rows that name their pool process, worked out per (stream, process) at once."""

    open_rows: np.ndarray      # the row that opened each run, in row order
    runs: list                 # their Runs (ids still to be given), in the same order
    member_rows: np.ndarray    # every row given to one of them ...
    member_run: np.ndarray     # ... and which (an index into ``runs``)
    lost: list                 # (row, stream) of worker exits that closed no run


def _process_runs(n, times, ev_codes, ev_names, proc, proc_names, task, task_names, stream, targets, waits,
                  exit_names: dict, where) -> _ProcessRuns:
    """The process path of ``attribute`` without a loop over rows.

    On one (stream, process), in time order, a run is open after a start, a skip or any other
    line, and closed after a finish, a retry, the process's death or a worker restart. So a row
    opens a run when it starts one or finds none open; a finish or retry with no run open is
    nobody's; the row after a run's last one says how it ended.
    """
    is_ = lambda names: is_in(ev_codes, ev_names, names)
    pool, received = is_(POOL_EVENTS), is_({"received"})
    mine = np.flatnonzero((proc >= 0) & ~pool & ~received)
    typ = np.full(n, _OTHER, np.int8)
    typ[is_({"run_start", "skip"})] = _START
    typ[is_({"run_finish", "retry"})] = _END
    nproc = len(proc_names) + 1
    key, row, kind = [stream[mine] * nproc + proc[mine]], [mine], [typ[mine]]
    # closers: a process that exited closes its own run; a worker restart closes every run of its stream
    exits = np.flatnonzero(is_({"worker_exit"}))
    proc_index = {p: k for k, p in enumerate(proc_names)}
    exit_proc = np.asarray([proc_index.get(exit_names.get(int(i)), -1) for i in exits], np.int64)
    named = exit_proc >= 0
    key.append(stream[exits[named]] * nproc + exit_proc[named])
    row.append(exits[named])
    kind.append(np.full(int(named.sum()), _DIED, np.int8))
    restarts = np.flatnonzero(is_({"worker_ready", "worker_stop"}))
    if len(restarts):
        keys = np.unique(key[0])
        for i in restarts:
            ks = keys[keys // nproc == stream[i]]
            key.append(ks)
            row.append(np.full(len(ks), i, np.int64))
            kind.append(np.full(len(ks), _RESTART, np.int8))
    key, row, kind = np.concatenate(key), np.concatenate(row), np.concatenate(kind)
    order = np.lexsort((row, key))
    key, row, kind = key[order], row[order], kind[order]
    same_prev = np.r_[False, key[1:] == key[:-1]]
    prev_open = same_prev & np.r_[False, (kind[:-1] == _START) | (kind[:-1] == _OTHER)]
    member = (kind == _START) | (kind == _OTHER) | ((kind == _END) & prev_open)
    opens = (kind == _START) | ((kind == _OTHER) & ~prev_open)
    lost = [(int(i), int(stream[i])) for i in row[(kind == _DIED) & ~prev_open]]
    lost += [(int(i), int(stream[i])) for i in exits[~named]]
    seq = np.cumsum(opens) - 1                       # each entry's latest run (members: their own)
    first = np.flatnonzero(opens)
    nxt_same_run = np.r_[same_prev[1:] & member[1:] & ~opens[1:], False]
    last = np.flatnonzero(member & ~nxt_same_run)    # each run's last row, in run order
    m = np.flatnonzero(member)
    mrow, mrun = row[m], seq[m]
    ev_at = lambda names: is_in(ev_codes[mrow], ev_names, names)
    # what take() keeps of a run's rows: its task (first named), announced wait, target, waiting
    has_task = task[mrow] >= 0
    g, first_task_at = np.unique(mrun[has_task], return_index=True)
    run_task = np.full(len(first), -1, np.int64)
    run_task[g] = task[mrow[has_task]][first_task_at]
    want_target = ev_at({"wait", "heartbeat", "abort"}) & ~np.isnan(targets[mrow])
    g, v = last_of(mrun[want_target], targets[mrow[want_target]])
    last_target = np.full(len(first), np.nan)
    last_target[g] = v
    said = ev_at({"wait"}) & ~np.isnan(waits[mrow])
    g, v = last_of(mrun[said], waits[mrow[said]])
    announced = np.full(len(first), np.nan)
    announced[g] = v
    waiting_on = ev_at({"wait", "heartbeat"}) & ~np.isnan(targets[mrow])
    waiting_off = ev_at({"grant", "spend", "abort", "run_finish", "retry"})
    flip = waiting_on | waiting_off
    g, v = last_of(mrun[flip], waiting_on[flip])
    waiting = np.zeros(len(first), bool)
    waiting[g] = v
    hint_bf, hint_feed = np.zeros(len(first), bool), np.zeros(len(first), bool)
    hint_bf[mrun[ev_at(BACKFILL_EVENTS)]] = True
    hint_feed[mrun[ev_at(FEED_EVENTS)]] = True
    # how each run ended: its last row (a finish or a retry), or the entry after it on its process
    end_row = np.full(len(first), -1, np.int64)
    how = np.full(len(first), "open", dtype=object)
    lr = row[last]
    by_self = kind[last] == _END
    end_row[by_self] = lr[by_self]
    retried = by_self & is_in(ev_codes[lr], ev_names, {"retry"})
    opened_by_skip = is_in(ev_codes[row[first]], ev_names, {"skip"})
    how[by_self] = np.where(opened_by_skip[by_self], "skip", "finished")
    how[retried] = "retry"
    announced[retried] = waits[lr[retried]]   # the countdown Celery announced, if it did (NaN: none)
    nxt = np.minimum(last + 1, len(key) - 1)
    after = ~by_self & (last + 1 < len(key)) & np.r_[same_prev[1:], False][last]
    for k, label in ((_START, "superseded"), (_DIED, "died"), (_RESTART, "restart")):
        hit = after & (kind[nxt] == k)
        end_row[hit], how[hit] = row[nxt][hit], label
    how[(end_row < 0) & opened_by_skip] = "skip"
    # in row order, as the ids will be
    open_rows = row[first]
    by_row = np.argsort(open_rows, kind="stable")
    runs = []
    o, lr_, er = open_rows[by_row], lr[by_row], end_row[by_row]
    cols = zip(er.tolist(), stream[o].tolist(), proc[o].tolist(), run_task[by_row].tolist(),
               (kind[first[by_row]] == _START).tolist(), list(times[o]), list(times[lr_]), how[by_row].tolist(),
               last_target[by_row].tolist(), announced[by_row].tolist(), waiting[by_row].tolist(),
               hint_bf[by_row].tolist(), hint_feed[by_row].tolist(), where(o), where(np.maximum(er, 0)))
    for e, st, p, t, in_log, start, last_t, ended_by, target, said, waits_now, bf, feed, at, end_at in cols:
        r = Run(-1, st, proc_names[p], task_names[t] if t >= 0 else None, start, at, in_log, last=last_t,
                ended_by=ended_by, last_target=None if target != target else target,
                announced=None if said != said else said, waiting=waits_now)
        if e >= 0:
            r.end, r.end_where = times[e], end_at
        if bf:
            r.hints.add("backfill")
        if feed:
            r.hints.add("feed")
        runs.append(r)
    rank = np.empty(len(first), np.int64)
    rank[by_row] = np.arange(len(first))
    return _ProcessRuns(open_rows[by_row], runs, mrow, rank[mrun], lost)


def attribute(events: pd.DataFrame) -> Attribution:
    """Split ``events`` (any order) into runs; see the module doc for the rules.

    The rows that name their pool process are split in one vectorised pass (``_process_runs``);
    only the rows that name none, which need the stream's recent history, go through a loop.
    """
    t = events["time"]
    ev = (events if not t.isna().any() and t.is_monotonic_increasing
          else events.sort_values("time", kind="stable")).reset_index(drop=True)
    n = len(ev)
    times = ev["time"].to_numpy()  # numpy datetimes throughout: a Timestamp per run cost seconds on big logs
    ev_codes, ev_names = codes(ev["event"])
    proc, proc_names = codes(ev["process"])
    task, task_names = codes(ev["task"])
    kind_codes, kind_names = codes(ev["kind"])
    src_codes, src_names = codes(ev["source"])
    streams = stream_codes(ev).astype(np.int64)
    lines = ev["line"].to_numpy()
    targets = ev["target"].to_numpy(dtype="float64", na_value=np.nan)
    waits = ev["wait"].to_numpy(dtype="float64", na_value=np.nan)
    details = ev["detail"]  # read only at the few lines that need it (a process's exit): not boxed per line

    def where(i):
        """``file:line`` of row ``i``, or a list of them for an array of rows."""
        return where_at(src_codes, src_names, lines, i) if isinstance(i, np.ndarray) else \
            where_at(src_codes, src_names, lines, [i])[0]

    exit_names = {}
    for i in np.flatnonzero(is_in(ev_codes, ev_names, {"worker_exit"})):
        d = details.iat[i]
        exit_names[int(i)] = (json.loads(d) if isinstance(d, str) and d else {}).get("reason")
    pr = _process_runs(n, times, ev_codes, ev_names, proc, proc_names, task, task_names, streams, targets, waits,
                       exit_names, where)

    run_of = np.full(n, -1, dtype=np.int64)
    loop_runs: list[Run] = []                   # the runs of rows that name no process, in opening order
    loop_open_rows: list[int] = []
    by_task: dict[int, dict[str, Run]] = {}     # stream -> task -> open run (streams without processes)
    last_named: dict[int, str] = {}
    named_at: dict[int, pd.Timestamp] = {}
    pending_skips: dict[tuple, int] = {}
    ambiguous = unattributed = 0
    token_tasks = set(TOKEN_TASKS)
    granted: dict[int, Run] = {}                # stream -> the run whose grant awaits its call
    granted_weak: dict[int, bool] = {}
    doubtful: list = []                         # calls given by a weak rule: (row, candidates, pick)
    saves: dict[int, list] = {}                 # backfill run -> times of its checkpoint lines

    def open_run(i, stream, process, task, in_log=True):
        # ids in opening order, among the process path's runs too
        rid = len(loop_runs) + int(np.searchsorted(pr.open_rows, i))
        loop_open_rows.append(i)
        r = Run(rid, stream, process, task, times[i], where(i), in_log, last=times[i])
        loop_runs.append(r)
        return r

    def close(r: Run, i, how):
        if r.end is None:
            r.end, r.ended_by, r.end_where = times[i], how, where(i)
            if how == "retry":  # the countdown Celery announced ("Retry in Ns"), if it did
                r.announced = float(waits[i]) if waits[i] == waits[i] else None

    def take(r: Run, i, e):
        run_of[i] = r.id
        r.last = times[i]
        if waits[i] == waits[i] and e == "wait":
            r.announced = float(waits[i])
        if targets[i] == targets[i] and e in ("wait", "heartbeat", "abort"):
            r.last_target = float(targets[i])
        if e in ("wait", "heartbeat"):
            r.waiting = targets[i] == targets[i] or r.waiting
        elif e in ("grant", "spend", "abort", "run_finish", "retry"):
            r.waiting = False
        if e in BACKFILL_EVENTS:
            r.hints.add("backfill")
        elif e in FEED_EVENTS:
            r.hints.add("feed")

    pool = is_in(ev_codes, ev_names, POOL_EVENTS)
    restart = is_in(ev_codes, ev_names, {"worker_ready", "worker_stop"})
    loop_rows = np.flatnonzero(((proc < 0) & ~pool & ~is_in(ev_codes, ev_names, {"received"})) | restart)
    for i in loop_rows.tolist():
        e, st = ev_names[ev_codes[i]], int(streams[i])
        task_i = task_names[task[i]] if task[i] >= 0 else None
        if restart[i]:   # the process path closes its own runs
            for r in by_task.pop(st, {}).values():
                close(r, i, "restart")
            continue
        # no process named: bracket by the tasks' own lines within the stream
        open_ = by_task.setdefault(st, {})
        if task_i:
            celery_line = kind_codes[i] >= 0 and kind_names[kind_codes[i]] == "celery_task"
            if e != "skip" and not celery_line:   # the task's own module logged this
                last_named[st], named_at[st] = task_i, times[i]
            if e in TOKEN_EVENTS:
                token_tasks.add(task_i)
            if e == "skip":
                pending_skips[(st, task_i)] = pending_skips.get((st, task_i), 0) + 1
                continue
            if e == "run_finish" and celery_line and pending_skips.get((st, task_i), 0) > 0:
                pending_skips[(st, task_i)] -= 1       # the skip's own 'succeeded'
                continue
            cur = open_.get(task_i)
            if e == "run_start":
                if cur is not None:
                    close(cur, i, "superseded")
                cur = open_[task_i] = open_run(i, st, None, task_i)
            elif cur is None:
                if e == "run_finish":
                    continue
                cur = open_[task_i] = open_run(i, st, None, task_i, in_log=False)
            take(cur, i, e)
            if e in BACKFILL_EVENTS:
                saves.setdefault(cur.id, []).append(times[i])
            if e in ("run_finish", "retry"):
                close(cur, i, "finished" if e == "run_finish" else "retry")
                del open_[task_i]
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
        target = targets[i]
        pick, weak = None, False
        if len(cands) == 1:
            pick = cands[0]
        else:
            caller = open_.get(last_named.get(st))
            if caller in cands and (times[i] - named_at[st]) / np.timedelta64(1, "s") <= CALLER_S and (
                    caller.last_target is None or caller.last_target == target or target != target):
                pick = caller               # the token manager answering the task line just before it
            if pick is None and target == target:
                same = [r for r in cands if r.last_target == target]
                if len(same) == 1:
                    pick = same[0]
            if pick is None and e == "grant" and target != target:
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
                        r.announced = max(r.announced or 0.0, float(waits[i]))
            if e == "spend":
                doubtful.append((i, cands, pick))
        if pick is None:
            ambiguous += 1
            continue
        take(pick, i, e)
        if e == "grant":
            granted[st], granted_weak[st] = pick, weak
        elif e in ("spend", "429"):
            granted.pop(st, None)
        if e in BACKFILL_EVENTS:
            saves.setdefault(pick.id, []).append(times[i])
        if e in BACKFILL_EVENTS or e in FEED_EVENTS:
            last_named[st], named_at[st] = pick.task, times[i]

    # the process path's runs take the ids left between the loop's, in opening order
    pids = np.arange(len(pr.runs)) + np.searchsorted(np.asarray(loop_open_rows, np.int64), pr.open_rows)
    for r, rid in zip(pr.runs, pids.tolist()):
        r.id = rid
    runs = sorted(pr.runs + loop_runs, key=lambda r: r.id)
    run_of[pr.member_rows] = pids[pr.member_run]
    lost_at: dict[int, list] = {}               # stream -> times of lost workers it could not name
    lost_rows = pr.lost + [(int(i), int(streams[i])) for i in np.flatnonzero(is_in(ev_codes, ev_names, {"worker_lost"}))]
    for i, st in sorted(lost_rows):
        lost_at.setdefault(st, []).append(times[i])
    skip_rows = np.flatnonzero(is_in(ev_codes, ev_names, {"skip"}) & (task >= 0))
    skips = [(times[i], task_names[task[i]], int(streams[i]), at)
             for i, at in zip(skip_rows.tolist(), where(skip_rows))]

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
    ev["run"] = run_of
    ev["task"] = _tasks_by_run(task, task_names, run_of, [r.task for r in runs])
    table = _table(runs)
    sk = pd.DataFrame(skips, columns=["time", "task", "stream", "where"])
    return Attribution(ev, table, sk, ambiguous, unattributed, inferred, runs, stream_end)


RUN_COLUMNS = ["run", "stream", "process", "task", "start", "end", "last", "ended_by", "where", "end_where",
               "started_in_log", "silent", "retry_in"]


def _table(runs: list[Run]) -> pd.DataFrame:
    """The runs as a frame, a column at a time (times stay in the events' unit)."""
    cols = {"run": [r.id for r in runs], "stream": [r.stream for r in runs], "process": [r.process for r in runs],
            "task": [r.task for r in runs], "start": [r.start for r in runs], "end": [r.end for r in runs],
            "last": [r.seen for r in runs], "ended_by": [r.ended_by for r in runs],
            "where": [r.where for r in runs], "end_where": [r.end_where for r in runs],
            "started_in_log": [r.started_in_log for r in runs], "silent": [r.silent for r in runs],
            "retry_in": [r.announced if r.ended_by == "retry" else None for r in runs]}
    return pd.DataFrame(cols, columns=RUN_COLUMNS)


def _tasks_by_run(task: np.ndarray, task_names: list, run_of: np.ndarray, run_task: list) -> pd.Categorical:
    """Each row's task: its run's, else its own; categories are the names present, sorted."""
    names = list(dict.fromkeys([*task_names, *(t for t in run_task if t is not None)]))
    index = {t: k for k, t in enumerate(names)}
    of_run = np.asarray([index[t] if t is not None else -1 for t in run_task] + [-1], np.int64)
    c = np.where(run_of >= 0, of_run[run_of], task)
    present = sorted(names[k] for k in np.unique(c[c >= 0]))
    rank = np.full(len(names) + 1, -1, np.int64)
    rank[[index[t] for t in present]] = np.arange(len(present))
    return pd.Categorical.from_codes(rank[c], categories=pd.Index(present))


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
