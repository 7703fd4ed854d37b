"""A model of the legacy Celery deals pipeline, written from the spec, for test logs.

It shares no code with keepa_ops (no templates, no formatting, no engine): every line is
a literal format string following ``legacy-logs.md``, and the mechanics follow
``incidents.md``:

* one Keepa bucket: continuous refill up to 60 x rate, a call admitted while the balance
  is positive and debited in full, 429 at or below zero, ``tokensLeft`` an integer;
* a Celery worker: MainProcess and a prefork pool of ForkPoolWorker-N processes, Beat
  sending each periodic task on its schedule whether or not the last run finished, Redis
  locks without expiry, duplicates that skip, a killed process replaced by a new one,
  deploy restarts with a new banner;
* the token manager eras, as options of ``TokenManager``.

Time is virtual. Each run is a generator that yields how long it sleeps; ``World.run``
steps them in time order. Ground truth (grants, saved rows, spends, waits, deaths) is
recorded as the model runs, for the incident definitions to assert.
"""
from __future__ import annotations

import heapq
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

CELERY_NAME = {"update_recent_deals": "keepa_deals.simple_task.update_recent_deals",
               "backfill_deals": "keepa_deals.backfiller.backfill_deals",
               "smart_ingestor": "keepa_deals.smart_ingestor.run",
               "clean_stale_deals": "keepa_deals.janitor.clean_stale_deals",
               "check_restriction_for_asins": "keepa_deals.sp_api_tasks.check_restriction_for_asins"}
MODULE = {"update_recent_deals": "keepa_deals.simple_task", "backfill_deals": "keepa_deals.backfiller",
          "smart_ingestor": "keepa_deals.smart_ingestor", "clean_stale_deals": "keepa_deals.janitor",
          "check_restriction_for_asins": "keepa_deals.sp_api_tasks"}
KEEPA_EPOCH = datetime(2011, 1, 1)


def stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") + ",%03d" % (dt.microsecond // 1000)


class Formatter:
    """The production line formats: Celery's worker default (optionally with the task-logger
    prefix), basicConfig with and without the logger name, and Python's default."""

    def __init__(self, kind: str):
        assert kind in ("celery", "celery_tasklogger", "named", "basic", "pydefault"), kind
        self.kind = kind

    def line(self, dt, level, process, logger, message, task_prefix=None) -> str:
        ts = stamp(dt)
        if self.kind == "celery":
            return "[%s: %s/%s] %s" % (ts, level, process, message)
        if self.kind == "celery_tasklogger":
            pre = "%s: " % task_prefix if task_prefix else ""
            return "[%s: %s/%s] %s%s" % (ts, level, process, pre, message)
        if self.kind == "named":
            return "%s - %s - %s - %s" % (ts, logger, level, message)
        if self.kind == "basic":
            return "%s - %s - %s" % (ts, level, message)
        return "%s:%s:%s" % (level, logger, message)


class Keepa:
    def __init__(self, world, rate: float, tokens: float):
        self.w, self.rate, self.tokens, self.t = world, rate, float(tokens), 0.0
        self.min = self.max = float(tokens)
        self.calls_429 = 0

    @property
    def cap(self):
        return 60.0 * self.rate

    def balance(self) -> float:
        now = self.w.now
        self.tokens = min(self.cap, self.tokens + self.rate * (now - self.t) / 60.0)
        self.t = now
        self.max = max(self.max, self.tokens)
        return self.tokens

    def call(self, cost: float):
        """(consumed, tokensLeft) or (0, left) for a 429."""
        b = self.balance()
        if b <= 0:
            self.calls_429 += 1
            return 0, int(math.floor(b))
        self.tokens -= cost
        self.min = min(self.min, self.tokens)
        return cost, int(math.floor(self.tokens))

    def status(self) -> str:
        b = self.balance()
        ms = int((self.w.start + timedelta(seconds=self.w.now)).timestamp() * 1000)
        return ("{'timestamp': %d, 'tokensLeft': %d, 'refillIn': %d, 'refillRate': %d, 'tokenFlowReduction': 0.0, "
                "'tokensConsumed': 0, 'processingTimeInMs': %d}"
                % (ms, int(math.floor(b)), self.w.rng.randint(1000, 59000), self.rate, self.w.rng.randint(1, 4)))


@dataclass
class Run:
    task: str
    process: str
    id: str
    started: float
    gen: object = None
    alive: bool = True
    finished: float | None = None
    wait_since: float | None = None


@dataclass
class Truth:
    grants: dict = field(default_factory=dict)       # task -> product/backfill calls admitted
    saved: dict = field(default_factory=dict)        # task -> rows upserted / chunks saved
    spent: dict = field(default_factory=dict)        # task -> tokens Keepa charged
    aborts: dict = field(default_factory=dict)
    waits: list = field(default_factory=list)        # (task, start, end or None, how)
    deaths: list = field(default_factory=list)       # (task, process, time, how)
    restarts: list = field(default_factory=list)
    last_saved: dict = field(default_factory=dict)   # task -> time of its last saved work

    def add(self, d, task, n=1):
        d[task] = d.get(task, 0) + n


class World:
    """The worker, its pool, Beat, Redis and Keepa, stepping in virtual time."""

    def __init__(self, fmt: str, rate: float, tokens: float, start: datetime, seed: int, pool: int = 4,
                 noise: bool = True):
        self.fmt = Formatter(fmt)
        self.start = start
        self.rng = random.Random(seed)
        self.now = 0.0
        self.keepa = Keepa(self, rate, tokens)
        self.pool_size = pool
        self.next_proc = 1
        self.procs: dict[str, Run | None] = {}
        self.queue: list = []
        self.heap: list = []
        self.seq = 0
        self.locks: dict[str, str] = {}
        self.redis: dict = {}
        self.lines: list[tuple[float, int, str]] = []
        self.raw_lines: set[str] = set()
        self.truth = Truth()
        self.noise = noise
        self.job = 0
        self._new_pool()

    # -- logging ---------------------------------------------------------------------------
    def log(self, level, process, logger, message, task_prefix=None, at=None):
        t = self.now if at is None else at
        self.seq += 1
        dt = self.start + timedelta(seconds=t)
        self.lines.append((t, self.seq, self.fmt.line(dt, level, process, logger, message, task_prefix)))

    def raw(self, text):
        """A line with no logging prefix: the banner, a traceback or warning continuation."""
        self.seq += 1
        self.lines.append((self.now, self.seq, text))
        self.raw_lines.add(text)

    def banner(self):
        dt = self.start + timedelta(seconds=self.now)
        host = "agentarbitrage"
        for text in ["", " -------------- celery@%s v5.3.6 (emerald-rush)" % host, "--- ***** ----- ",
                     "-- ******* ---- Linux-6.8.0-1021-aws-x86_64-with-glibc2.39 %s" % dt.strftime("%Y-%m-%d %H:%M:%S"),
                     "- *** --- * --- ", "- ** ---------- [config]",
                     "- ** ---------- .> app:         worker:0x7f05d24bb25c",
                     "- ** ---------- .> transport:   redis://localhost:6379/0",
                     "- *** --- * --- .> concurrency: %d (prefork)" % self.pool_size, "--- ***** ----- ",
                     " -------------- [queues]",
                     "                .> celery           exchange=celery(direct) key=celery",
                     "", "[tasks]"] + ["  . %s" % n for n in sorted(CELERY_NAME.values())]:
            self.raw(text)
        self.log("WARNING", "MainProcess", "celery.redirected",
                 "/srv/venv/lib/python3.12/site-packages/celery/worker/consumer/consumer.py:507: "
                 "CPendingDeprecationWarning: The broker_connection_retry configuration setting will no longer "
                 "determine")
        self.raw("whether broker connection retries are made during startup in Celery 6.0 and above.")
        self.raw("  warnings.warn(")
        self.raw("")
        self.log("INFO", "MainProcess", "celery.worker.consumer.connection", "Connected to redis://localhost:6379/0")
        self.log("INFO", "MainProcess", "celery.worker.consumer.mingle", "mingle: searching for neighbors")
        self.log("INFO", "MainProcess", "celery.worker.consumer.mingle", "mingle: all alone")
        self.log("INFO", "MainProcess", "celery.apps.worker", "celery@%s ready." % host)

    # -- the pool ----------------------------------------------------------------------------
    def _new_pool(self):
        self.procs = {}
        for _ in range(self.pool_size):
            self.procs["ForkPoolWorker-%d" % self.next_proc] = None
            self.next_proc += 1

    def send(self, task, body, **kw):
        """Beat (or a caller) sends ``task``; MainProcess receives it; a free process runs it."""
        tid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.log("INFO", "MainProcess", "celery.worker.strategy", "Task %s[%s] received" % (CELERY_NAME[task], tid))
        self.queue.append((task, tid, body, kw))
        self._dispatch()

    def _dispatch(self):
        while self.queue:
            free = [p for p, r in self.procs.items() if r is None]
            if not free:
                return
            task, tid, body, kw = self.queue.pop(0)
            proc = self.rng.choice(free)
            run = Run(task, proc, tid, self.now)
            self.procs[proc] = run
            run.gen = self._wrap(run, body(self, run, **kw))
            self._push(self.now + self.rng.uniform(0.003, 0.03), run)

    def _wrap(self, run, gen):
        yield from gen
        self.finish(run)

    def finish(self, run, ok=True):
        if not run.alive:
            return
        run.alive = False
        run.finished = self.now
        self.log("INFO", run.process, "celery.app.trace", "Task %s[%s] succeeded in %ss: None"
                 % (CELERY_NAME[run.task], run.id, repr(max(0.001, self.now - run.started) + self.rng.random() * 1e-3)))
        if self.procs.get(run.process) is run:
            self.procs[run.process] = None
        self._dispatch()

    def _push(self, t, run):
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, run))

    def at(self, t, fn):
        """Call ``fn(world)`` at time ``t`` (Beat ticks, faults, deploys)."""
        self._push(t, fn)

    def run(self, until: float):
        while self.heap and self.heap[0][0] <= until:
            t, _, item = heapq.heappop(self.heap)
            self.now = t
            if callable(item) and not isinstance(item, Run):
                item(self)
                continue
            if not item.alive:
                continue
            try:
                delay = next(item.gen)
            except StopIteration:
                continue
            self._push(self.now + max(0.0, delay), item)
        self.now = until
        for r in list(self.procs.values()):
            if r is not None and r.wait_since is not None:
                self.truth.waits.append((r.task, r.wait_since, None, "open"))

    # -- faults ------------------------------------------------------------------------------
    def kill(self, process: str, how="signal 9 (SIGKILL)"):
        run = self.procs.get(process)
        if run is None:
            return
        run.alive = False
        self.truth.deaths.append((run.task, process, self.now, how))
        if run.wait_since is not None:
            self.truth.waits.append((run.task, run.wait_since, self.now, "died"))
        self.job += 1
        self.log("ERROR", "MainProcess", "celery.concurrency.asynpool",
                 "Process '%s' pid:%d exited with '%s'" % (process, self.rng.randint(1000, 99999), how))
        self.log("ERROR", "MainProcess", "celery.worker.request",
                 "Task handler raised error: WorkerLostError('Worker exited prematurely: %s Job: %d.')"
                 % (how, self.job))
        for text in ["Traceback (most recent call last):",
                     '  File "/srv/venv/lib/python3.12/site-packages/billiard/pool.py", line 1264, '
                     'in mark_as_worker_lost',
                     "    raise WorkerLostError(",
                     "billiard.exceptions.WorkerLostError: Worker exited prematurely: %s Job: %d." % (how, self.job)]:
            self.raw(text)
        del self.procs[process]
        self.procs["ForkPoolWorker-%d" % self.next_proc] = None   # the pool replaces it
        self.next_proc += 1
        self._dispatch()

    def hang(self, process: str):
        """The run on ``process`` stops forever without a word (a call that never returns)."""
        run = self.procs.get(process)
        if run is not None:
            run.alive = False
            self.truth.deaths.append((run.task, process, self.now, "hung"))

    def restart(self, flush_redis=False):
        """A deploy: warm shutdown kills every run (their locks stay unless Redis is flushed)."""
        self.log("WARNING", "MainProcess", "celery.apps.worker", "worker: Warm shutdown (MainProcess)")
        for p, run in self.procs.items():
            if run is not None:
                run.alive = False
                self.truth.deaths.append((run.task, p, self.now, "restart"))
                if run.wait_since is not None:
                    self.truth.waits.append((run.task, run.wait_since, self.now, "restart"))
        self.truth.restarts.append(self.now)
        self.queue.clear()
        if flush_redis:
            self.locks.clear()
            self.redis.clear()
        self.banner()
        self.next_proc = 1          # a new pool numbers its processes from 1 again
        self._new_pool()


def keepa_minutes(dt: datetime) -> int:
    return int((dt - KEEPA_EPOCH).total_seconds() // 60)
