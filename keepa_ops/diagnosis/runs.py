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

from .columns import by_name, codes, is_in, last_of, where_at

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
    """A run of lines that name no process, while the loop attributes them (the process path's
    runs are columns from the start); both become rows of the ``runs`` table."""

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
    stream_end: dict = field(default_factory=dict)  # stream code -> the time of its last line


# How a row of a pool process moves its run: the row types of the process path.
_START, _END, _OTHER, _DIED, _RESTART = range(5)
# How a run of the process path ended, as _runs.process_runs numbers it.
_HOW = np.asarray(["open", "finished", "retry", "skip", "superseded", "died", "restart"], dtype=object)
# Row flags of the process path (see _runs.c): what a member row tells its run ...
_WANTS, _ANNOUNCES, _WAITING_ON, _WAITING_OFF, _BACKFILL, _FEED, _RETRY, _SKIP = (1 << k for k in range(8))
# ... and the run flags it gives back: waiting at its end, backfill and feed hints, began in the log, a skip's.
_R_WAITING, _R_BACKFILL, _R_FEED, _R_IN_LOG, _R_BY_SKIP = (1 << k for k in range(5))

try:
    from . import _runs
except ImportError:  # pragma: no cover - a build without a C compiler
    _runs = None


@dataclass
class _ProcessRuns:
    """The runs of the rows that name their pool process, worked out per (stream, process) at once."""

    open_rows: np.ndarray      # the row that opened each run, in row order
    runs: dict                 # their columns (see _RUN_FIELDS), in the same order; ids still to be given
    member_rows: np.ndarray    # every row given to one of them ...
    member_run: np.ndarray     # ... and which (an index into ``runs``)
    lost: list                 # (row, stream) of worker exits that closed no run


def _process_runs(times, ev_codes, ev_names, proc, proc_names, task, task_names, stream, targets, waits,
                  exit_names: dict, where) -> _ProcessRuns:
    """The process path of ``attribute`` without a loop over rows in Python.

    On one (stream, process), in time order, a run is open after a start, a skip or any other
    line, and closed after a finish, a retry, the process's death or a worker restart. So a row
    opens a run when it starts one or finds none open; a finish or retry with no run open is
    nobody's; the row after a run's last one says how it ended. The rows are sorted into a few
    integer kinds here; ``_runs.process_runs`` walks them once in C (``_process_runs_numpy``
    without the extension).
    """
    is_ = lambda names: is_in(ev_codes, ev_names, names)
    nproc = max(len(proc_names), 1)
    # what each event does, and the flags it carries, by lookup on its code (one pass each)
    mine = (proc >= 0) & ~is_(POOL_EVENTS | {"received"})
    group = stream.astype(np.int32) * np.int32(nproc) + proc.astype(np.int32)
    group[~mine] = -1
    what = by_name(ev_codes, ev_names, {1: {"run_start", "skip"}, 2: {"run_finish", "retry"}}, default=3)
    what[~mine] = 0
    # closers: a process that exited closes its own run; a worker restart closes every run of its stream
    exits = np.flatnonzero(is_({"worker_exit"}))
    proc_index = {p: k for k, p in enumerate(proc_names)}
    exit_proc = np.asarray([proc_index.get(exit_names.get(int(i)), -1) for i in exits], np.int64)
    named = exit_proc >= 0
    group[exits[named]] = stream[exits[named]] * nproc + exit_proc[named]
    what[exits[named]] = 4
    what[is_({"worker_ready", "worker_stop"})] = 5
    flag_of = np.zeros(len(ev_names) + 1, np.uint8)   # the last slot: a row with no event
    for bit, names in ((_WANTS, {"wait", "heartbeat", "abort"}), (_ANNOUNCES, {"wait"}),
                       (_WAITING_ON, {"wait", "heartbeat"}), (_WAITING_OFF, {"grant", "spend", "abort", "run_finish",
                                                                               "retry"}),
                       (_BACKFILL, BACKFILL_EVENTS), (_FEED, FEED_EVENTS), (_RETRY, {"retry"}), (_SKIP, {"skip"})):
        flag_of[:-1][[e in names for e in ev_names]] |= bit
    flags = flag_of[ev_codes]
    as_ = lambda a, t: np.ascontiguousarray(a, dtype=t)   # a copy only where the type differs
    args = (group, what, as_(stream, np.int32), flags, as_(task, np.int32), as_(targets, np.float64),
            as_(waits, np.float64), nproc)
    raw = _process_runs_native(*args) if _runs is not None else _process_runs_numpy(*args)
    run_of, o, lr, er, how, run_task, last_target, announced, rflags, lost_rows = raw
    lost = [(int(i), int(stream[i])) for i in lost_rows] + [(int(i), int(stream[i])) for i in exits[~named]]
    nat = np.array("NaT", dtype=times.dtype)
    cols = {"stream": stream[o].astype(np.int64), "process": np.asarray(proc_names + [None], dtype=object)[proc[o]],
            "task": np.asarray(task_names + [None], dtype=object)[run_task],
            "start": times[o], "where": np.asarray(where(o), dtype=object), "started_in_log": (rflags & _R_IN_LOG) > 0,
            "end": np.where(er >= 0, times[np.maximum(er, 0)], nat), "ended_by": _HOW[how],
            "last": times[lr], "end_where": np.where(er >= 0, where(np.maximum(er, 0)), None),
            "last_target": last_target, "backfill": (rflags & _R_BACKFILL) > 0, "feed": (rflags & _R_FEED) > 0,
            "maybe": np.full(len(o), nat), "announced": announced, "silent": np.zeros(len(o), bool),
            "waiting": (rflags & _R_WAITING) > 0}
    member_rows = np.flatnonzero(run_of >= 0)
    return _ProcessRuns(o, cols, member_rows, run_of[member_rows].astype(np.int64), lost)


def _process_runs_native(group, what, stream, flags, task, target, wait, nproc):
    n = len(group)
    run_of = np.empty(n, np.int32)
    open_row, last_row, end_row = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    how, run_task = np.empty(n, np.int8), np.empty(n, np.int32)
    last_target, announced = np.empty(n, np.float64), np.empty(n, np.float64)
    rflags, lost = np.empty(n, np.uint8), np.empty(n, np.int64)
    nruns, nlost = _runs.process_runs(group, what, stream, flags, task, target, wait, nproc, run_of, open_row,
                                      last_row, end_row, how, run_task, last_target, announced, rflags, lost)
    k = slice(0, nruns)
    return (run_of, open_row[k].copy(), last_row[k].copy(), end_row[k].copy(), how[k].copy(), run_task[k].copy(),
            last_target[k].copy(), announced[k].copy(), rflags[k].copy(), lost[:nlost].copy())


def _process_runs_numpy(group, what, stream, flags, task, target, wait, nproc):
    """``_runs.process_runs`` in numpy (for builds without the extension): the same runs, per group
    at once. Returns (run of each row, then per run in row order: open, last and end rows, how it
    ended, its task, last target, announced re-check, flags; the exits that closed no run)."""
    n = len(group)
    mine = np.flatnonzero((what >= 1) & (what <= 3) & (group >= 0))
    typ = np.choose(what[mine] - 1, [_START, _END, _OTHER]).astype(np.int8)
    key, row, kind = [group[mine].astype(np.int64)], [mine], [typ]
    deaths = np.flatnonzero((what == 4) & (group >= 0))
    key.append(group[deaths].astype(np.int64))
    row.append(deaths)
    kind.append(np.full(len(deaths), _DIED, np.int8))
    restarts = np.flatnonzero(what == 5)
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
    lost = row[(kind == _DIED) & ~prev_open]
    seq = np.cumsum(opens) - 1                       # each entry's latest run (members: their own)
    first = np.flatnonzero(opens)
    nrun = len(first)
    nxt_same_run = np.r_[same_prev[1:] & member[1:] & ~opens[1:], False]
    last = np.flatnonzero(member & ~nxt_same_run)    # each run's last row, in run order
    m = np.flatnonzero(member)
    mrow, mrun = row[m], seq[m]
    f = flags[mrow]
    has_task = task[mrow] >= 0
    g, first_task_at = np.unique(mrun[has_task], return_index=True)
    run_task = np.full(nrun, -1, np.int32)
    run_task[g] = task[mrow[has_task]][first_task_at]
    wants = ((f & _WANTS) > 0) & ~np.isnan(target[mrow])
    g, v = last_of(mrun[wants], target[mrow[wants]])
    last_target = np.full(nrun, np.nan)
    last_target[g] = v
    said = ((f & _ANNOUNCES) > 0) & ~np.isnan(wait[mrow])
    g, v = last_of(mrun[said], wait[mrow[said]])
    announced = np.full(nrun, np.nan)
    announced[g] = v
    waiting_on = ((f & _WAITING_ON) > 0) & ~np.isnan(target[mrow])
    flip = waiting_on | ((f & _WAITING_OFF) > 0)
    g, v = last_of(mrun[flip], waiting_on[flip])
    rflags = np.zeros(nrun, np.uint8)
    rflags[g[v]] |= _R_WAITING
    rflags[np.unique(mrun[(f & _BACKFILL) > 0])] |= _R_BACKFILL
    rflags[np.unique(mrun[(f & _FEED) > 0])] |= _R_FEED
    rflags[kind[first] == _START] |= _R_IN_LOG
    opened_by_skip = (kind[first] == _START) & ((flags[row[first]] & _SKIP) > 0)
    rflags[opened_by_skip] |= _R_BY_SKIP
    # how each run ended: its last row (a finish or a retry), or the entry after it on its process
    end_row = np.full(nrun, -1, np.int64)
    how = np.zeros(nrun, np.int8)
    lr = row[last]
    by_self = kind[last] == _END
    end_row[by_self] = lr[by_self]
    retried = by_self & ((flags[lr] & _RETRY) > 0)
    how[by_self] = np.where(opened_by_skip[by_self], 3, 1)
    how[retried] = 2
    announced[retried] = wait[lr[retried]]   # the countdown Celery announced, if it did (NaN: none)
    nxt = np.minimum(last + 1, len(key) - 1)
    after = ~by_self & (last + 1 < len(key)) & np.r_[same_prev[1:], False][last]
    for k, code in ((_START, 4), (_DIED, 5), (_RESTART, 6)):
        hit = after & (kind[nxt] == k)
        end_row[hit], how[hit] = row[nxt][hit], code
    how[(end_row < 0) & opened_by_skip] = 3
    # in row order, as the native pass numbers them
    o = row[first]
    by_row = np.argsort(o, kind="stable")
    rank = np.empty(nrun, np.int64)
    rank[by_row] = np.arange(nrun)
    run_of = np.full(n, -1, np.int32)
    run_of[mrow] = rank[mrun]
    return (run_of, o[by_row], lr[by_row], end_row[by_row], how[by_row], run_task[by_row], last_target[by_row],
            announced[by_row], rflags[by_row], np.sort(lost))


# A run's columns while runs are attributed (``Run``'s fields, hints split in two): times are the
# events' numpy datetimes (NaT: none), numbers NaN where none.
_RUN_FIELDS = ("stream", "process", "task", "start", "where", "started_in_log", "end", "ended_by", "last", "end_where",
               "last_target", "backfill", "feed", "maybe", "announced", "silent", "waiting")


def _columns_of(runs: list, nat) -> dict:
    """Loop-path ``Run`` objects as run columns."""
    get = lambda f, none=None: [none if getattr(r, f) is None else getattr(r, f) for r in runs]
    return {"stream": np.asarray([r.stream for r in runs], np.int64),
            "process": np.asarray(get("process"), dtype=object), "task": np.asarray(get("task"), dtype=object),
            "start": np.asarray([r.start for r in runs], dtype=nat.dtype).reshape(-1),
            "where": np.asarray(get("where"), dtype=object),
            "started_in_log": np.asarray([r.started_in_log for r in runs], bool),
            "end": np.asarray(get("end", nat), dtype=nat.dtype).reshape(-1),
            "ended_by": np.asarray(get("ended_by"), dtype=object),
            "last": np.asarray(get("last", nat), dtype=nat.dtype).reshape(-1),
            "end_where": np.asarray(get("end_where"), dtype=object),
            "last_target": np.asarray(get("last_target", np.nan), np.float64),
            "backfill": np.asarray(["backfill" in r.hints for r in runs], bool),
            "feed": np.asarray(["feed" in r.hints for r in runs], bool),
            "maybe": np.asarray(get("maybe", nat), dtype=nat.dtype).reshape(-1),
            "announced": np.asarray(get("announced", np.nan), np.float64),
            "silent": np.asarray([r.silent for r in runs], bool), "waiting": np.asarray([r.waiting for r in runs], bool)}


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
    pr = _process_runs(times, ev_codes, ev_names, proc, proc_names, task, task_names, streams, targets, waits,
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

    # the process path's runs take the ids left between the loop's, in opening order; the loop's runs
    # join them as columns, all in id order
    pids = np.arange(len(pr.open_rows)) + np.searchsorted(np.asarray(loop_open_rows, np.int64), pr.open_rows)
    run_of[pr.member_rows] = pids[pr.member_run]
    nat = np.array("NaT", dtype=times.dtype)
    loop_cols = _columns_of(loop_runs, nat)
    order = np.argsort(np.r_[pids, [r.id for r in loop_runs]].astype(np.int64), kind="stable")
    runs = {f: np.concatenate([np.asarray(pr.runs[f]), loop_cols[f]])[order] for f in _RUN_FIELDS}
    seen = np.where(np.isnat(runs["maybe"]), runs["last"], np.maximum(runs["last"], runs["maybe"]))

    lost_at: dict[int, list] = {}               # stream -> times of lost workers it could not name
    lost_rows = pr.lost + [(int(i), int(streams[i])) for i in np.flatnonzero(is_in(ev_codes, ev_names, {"worker_lost"}))]
    for i, st in sorted(lost_rows):
        lost_at.setdefault(st, []).append(times[i])
    skip_rows = np.flatnonzero(is_in(ev_codes, ev_names, {"skip"}) & (task >= 0))
    skips = pd.DataFrame({"time": times[skip_rows], "task": np.asarray(task_names, dtype=object)[task[skip_rows]],
                          "stream": streams[skip_rows], "where": where(skip_rows)},
                         columns=["time", "task", "stream", "where"]) if len(skip_rows) else \
        pd.DataFrame([], columns=["time", "task", "stream", "where"])

    # a run still open after its stream's pool lost a process it cannot name, that never logged
    # again and stayed quiet a long while: it was the one that died
    stream_end: dict[int, pd.Timestamp] = {}
    if len(times):  # each stream's last line (rows are in time order)
        last_row = pd.Series(np.arange(len(times))).groupby(np.asarray(streams)).last()
        stream_end = {int(st): pd.Timestamp(times[i]) for st, i in last_row.items()}
    for k in np.flatnonzero(np.isnat(runs["end"])).tolist():
        st = int(runs["stream"][k])
        after = [t for t in lost_at.get(st, []) if t >= seen[k]]
        if after and (stream_end[st] - seen[k]).total_seconds() > QUIET_DEATH_S:
            runs["end"][k], runs["ended_by"][k] = after[0], "died"
            runs["end_where"][k] = "a WorkerLostError that names no process"

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

    _mark_silent(runs, seen, run_of, times, stream_end)
    inferred = _infer_tasks(runs, skips)
    ev["run"] = run_of
    ev["task"] = _tasks_by_run(task, task_names, run_of, runs["task"].tolist())
    return Attribution(ev, _table(runs, seen), skips, ambiguous, unattributed, inferred, stream_end)


RUN_COLUMNS = ["run", "stream", "process", "task", "start", "end", "last", "ended_by", "where", "end_where",
               "started_in_log", "silent", "retry_in"]


def _table(runs: dict, seen: np.ndarray) -> pd.DataFrame:
    """The runs as a frame (times stay in the events' unit; text columns typed as pandas infers them)."""
    retry = runs["ended_by"] == "retry"
    announced = runs["announced"]
    cols = {"run": np.arange(len(seen), dtype=np.int64), "stream": runs["stream"], "process": runs["process"].tolist(),
            "task": runs["task"].tolist(), "start": runs["start"], "end": runs["end"], "last": seen,
            "ended_by": runs["ended_by"].tolist(), "where": runs["where"].tolist(),
            "end_where": runs["end_where"].tolist(), "started_in_log": runs["started_in_log"],
            "silent": runs["silent"],
            "retry_in": [float(a) if r and a == a else None for r, a in zip(retry.tolist(), announced.tolist())]}
    return pd.DataFrame(cols, columns=RUN_COLUMNS)


def _tasks_by_run(task: np.ndarray, task_names: list, run_of: np.ndarray, run_task: list) -> pd.Categorical:
    """Each row's task: its run's, else its own; categories are the names present, sorted."""
    names = list(dict.fromkeys([*task_names, *(t for t in run_task if t is not None)]))
    index = {t: k for k, t in enumerate(names)}
    of_run = np.asarray([index[t] if t is not None else -1 for t in run_task] + [-1], np.int64)
    c = np.where(run_of >= 0, of_run[run_of], task)
    present = sorted(names[k] for k in np.flatnonzero(np.bincount(c[c >= 0], minlength=len(names))))
    rank = np.full(len(names) + 1, -1, np.int64)
    rank[[index[t] for t in present]] = np.arange(len(present))
    return pd.Categorical.from_codes(rank[c], categories=pd.Index(present))


def _mark_silent(runs: dict, seen: np.ndarray, run_of: np.ndarray, times: np.ndarray, stream_end: dict) -> None:
    """An open run that has been quiet past ``silent_after`` of its own rhythm went silent. Only open
    runs are looked at: their usual gap is the median of their lines' positive gaps."""
    open_ = np.flatnonzero(np.isnat(runs["end"]))
    if not len(open_):
        return
    rows = np.flatnonzero(np.isin(run_of, open_) & ~np.isnat(times))
    usual = {}
    if len(rows):
        ms = times[rows].astype("datetime64[ms]").astype("int64").astype("float64")
        ids = run_of[rows]
        order = np.lexsort((np.arange(len(ids)), ids))
        ids, ms = ids[order], ms[order]
        same = ids[1:] == ids[:-1]
        gaps = np.diff(ms) / 1000.0
        keep = same & (gaps > 0)
        usual = pd.Series(gaps[keep]).groupby(ids[1:][keep]).median().to_dict()
    for k in open_.tolist():
        quiet = (stream_end[int(runs["stream"][k])] - seen[k]).total_seconds()
        a = runs["announced"][k]
        runs["silent"][k] = quiet > silent_after(None if a != a else float(a), usual.get(k))


def _infer_tasks(runs: dict, skips: pd.DataFrame) -> list[str]:
    """Name the runs whose start the log lacks, where the log says whose they are."""
    said = []
    task, ended_by = runs["task"], runs["ended_by"]
    unnamed = np.flatnonzero(pd.isna(task) & (ended_by != "skip"))
    if not len(unnamed):
        return said
    names = set(t for t in pd.unique(task[pd.notna(task)])) | set(skips["task"].tolist())
    skip_times: dict[tuple, list] = {}
    for t, name, st in zip(skips["time"].to_numpy(), skips["task"].tolist(), skips["stream"].tolist()):
        skip_times.setdefault((st, name), []).append(t)
    end_or_last = np.where(np.isnat(runs["end"]), runs["last"], runs["end"])
    named = task.copy()            # as named before this names any run
    spans: dict[str, tuple] = {}   # per task, its named runs by start with the running maximum of their ends

    def busy(name, start, end):
        if name not in spans:
            mine = np.flatnonzero((named == name) & (ended_by != "skip"))
            order = np.lexsort((end_or_last[mine], runs["start"][mine]))
            starts = runs["start"][mine][order]
            spans[name] = (starts, np.maximum.accumulate(end_or_last[mine][order]) if len(mine) else starts)
        starts, max_end = spans[name]
        k = int(np.searchsorted(starts, end, "right"))
        return k > 0 and max_end[k - 1] >= start

    for k in unnamed.tolist():
        start, stream = runs["start"][k], int(runs["stream"][k])
        if runs["backfill"][k]:
            cands = sorted(t for t in names if is_backfill(t)) or sorted(t for t in TOKEN_TASKS if is_backfill(t))
            why = "it saves backfill checkpoints"
        else:
            # the lock holder: a task whose every tick skips while this run is open, with no run of its own
            end = end_or_last[k]
            held = set()
            for (st, name), ts in skip_times.items():
                if st == stream and bisect.bisect_right(ts, end) > bisect.bisect_left(ts, start):
                    held.add(name)
            cands = sorted(t for t in held if not busy(t, start, end))
            why = "every tick of it logged 'already running' while this run was open, and no other run of it was"
            if not cands and runs["feed"][k]:
                cands = sorted(t for t in names if not is_backfill(t))
                why = "it loads and moves the deal watermark"
        if len(cands) == 1:
            task[k] = cands[0]
            said.append(f"{runs['where'][k]}: the run on {runs['process'][k] or 'this stream'} began before the log; "
                        f"taken as {task[k]} because {why}.")
    return said
