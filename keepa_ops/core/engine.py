"""The scheduler: one event core for the simulator and the live runner.

The engine owns the bucket (its estimate of the balance), the admission policy
and the tasks' runs. It never polls: it starts due runs, grants what the policy
allows now, and otherwise sleeps on the clock until the earliest moment anything
can change (a refill reaching a target, a promotion, a scheduled start).

The engine never decides what a call costs. A task's ``page_cost`` and
``cost_per_item`` are estimates that set the admission target; Keepa (simulated or
real) charges its own price and every response's envelope replaces the estimate.

Invariants:
* nothing is admitted while the estimate is <= 0 (every target is > 0);
* a task has at most one run at a time; a tick that falls inside a run is skipped,
  and a ``ticks_skipped`` event counts them;
* every action is an event, in time order: run start and finish, wait, heartbeat,
  promotion, grant, spend, every sync that moved the estimate, 429, commit, abort,
  skipped ticks, faults.
"""
from __future__ import annotations

from ..keepa.bucket import EPS, INF, TokenBucket
from ..errors import KeepaError, NotEnoughTokens
from .events import EventLog
from .interfaces import Clock, Store, Transport
from .policies import Policy, Request, admission_target, make_policy
from .tasks import make_task

FAULT_BACKOFF = 60.0   # seconds before a run that failed on a Keepa error is retried
HEARTBEAT = 900.0      # a waiting task says so this often: silence then means a stall, not a wait


class TaskState:
    """A task's current run and its running totals."""

    __slots__ = ("task", "spec", "name", "gen", "req", "lease", "run_started", "run_items", "next_start",
                 "done", "grants", "items", "spent", "first_grant", "max_wait", "work_since",
                 "max_no_progress", "runs", "aborts", "refused", "faults")

    def __init__(self, task):
        self.task = task
        self.spec = task.spec
        self.name = task.name
        self.gen = None
        self.req = None
        self.lease = None  # the shared gate's lease of the call in flight, if the policy is shared
        self.run_started = 0.0
        self.run_items = 0
        self.next_start = 0.0
        self.done = False
        self.grants = 0
        self.items = 0
        self.spent = 0.0
        self.first_grant = None
        self.max_wait = 0.0
        self.work_since = None
        self.max_no_progress = 0.0
        self.runs = 0
        self.aborts = 0
        self.refused = 0
        self.faults = 0


class Engine:
    """Runs a config's tasks against a transport and a store, on a clock."""

    def __init__(self, config, clock: Clock, transport: Transport, store: Store, events: EventLog | None = None,
                 bucket: TokenBucket | None = None, policy: Policy | None = None):
        self.config = config
        self.clock = clock
        self.t0 = clock.now()
        self.bucket = bucket or TokenBucket(config.refill_per_minute, config.start_tokens,
                                            capacity=config.capacity, stepped=config.stepped,
                                            now=self.t0)
        self.policy = policy or make_policy(config.policy, config.starvation_bound)
        self.transport = transport
        self.store = store
        self.events = events if events is not None else EventLog(config.start)
        self.states = [TaskState(make_task(spec)) for spec in config.tasks.values()]
        self._state = {st.name: st for st in self.states}
        self._seq = 0
        self._stopping = False
        self._announced: set[int] = set()
        self._promoted: set[int] = set()
        self._next_heartbeat = self.t0 + HEARTBEAT
        self.ended_at = self.t0
        self.current: str | None = None  # the task whose Keepa call is in flight
        for st in self.states:
            st.next_start = self.t0

    # -- control --------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end at its next step (safe from a signal handler)."""
        self._stopping = True
        self.clock.stop()

    def run(self, until: float = INF) -> "Engine":
        clock, policy, bucket, states = self.clock, self.policy, self.bucket, self.states
        emit = self.events.emit
        if not self.events.rows:  # the log says what bucket it starts from
            now = clock.now()
            emit(now - self.t0, "sync", None, bucket.balance(now),
                 detail={"refill_rate": bucket.rate, "capacity": bucket.capacity, "policy": policy.name})
        while not self._stopping:
            now = clock.now()
            if now >= until:
                break
            for st in states:
                if st.gen is None and not st.done and st.next_start <= now + EPS:
                    self._start(st, now)
            req = policy.choose(now, bucket)
            if req is not None:
                self._grant(req, now)
                continue
            if policy.waiting and now >= self._next_heartbeat:
                self._heartbeat(now)
            wake = min(policy.next_time(now, bucket), until)
            if policy.waiting:
                wake = min(wake, self._next_heartbeat)
            for st in states:
                if st.gen is None and not st.done and st.next_start < wake:
                    wake = st.next_start
            for r in policy.waiting:
                if r.seq not in self._announced:
                    self._announced.add(r.seq)
                    b = bucket.balance(now)
                    emit(now - self.t0, "wait", r.task, b, r.target, r.cost, r.items,
                         max(0.0, bucket.time_until(r.target, now) - now))
                self._note_promotion(r, now)
            if wake == INF:
                break
            if wake <= now:
                wake = now + 1e-6
            clock.sleep_until(wake)
        self._close(min(clock.now(), until) if until < INF else clock.now())
        return self

    def _note_promotion(self, req: Request, now: float) -> None:
        """Log a request's promotion once, the first time the engine sees it promoted."""
        if req.promote_at <= now + EPS and req.seq not in self._promoted:
            self._promoted.add(req.seq)
            self.events.emit(now - self.t0, "promote", req.task, self.bucket.balance(now), req.target, req.cost,
                             req.items, now - req.since)

    def _heartbeat(self, now: float) -> None:
        b = self.bucket.balance(now)
        for r in self.policy.waiting:
            self.events.emit(now - self.t0, "heartbeat", r.task, b, r.target, r.cost, r.items, now - r.since)
        self._next_heartbeat = now + HEARTBEAT

    # -- runs -----------------------------------------------------------------
    def _start(self, st: TaskState, now: float) -> None:
        st.gen = st.task.run(self)
        st.run_started = now
        st.run_items = 0
        st.runs += 1
        self.events.emit(now - self.t0, "run_start", st.name, self.bucket.balance(now))
        self._advance(st)

    def _advance(self, st: TaskState) -> None:
        """Resume the run until it asks for tokens or ends."""
        try:
            cost, items = st.gen.send(None)
        except StopIteration as stop:
            self._finish(st, exhausted=bool(stop.value))
            return
        except KeepaError as e:
            st.faults += 1
            self._finish(st, exhausted=False, backoff=FAULT_BACKOFF,
                         error=f"{type(e).__name__}: {e}")
            return
        now = self.clock.now()
        spec = st.spec
        target = admission_target(self.policy.name, cost, spec.threshold)
        if st.work_since is None:
            st.work_since = now
        if spec.max_wait is not None:
            est = self.bucket.time_until(target, now) - now
            if est > spec.max_wait:
                st.aborts += 1
                self.events.emit(now - self.t0, "abort", st.name, self.bucket.balance(now), target,
                                 cost, items, est)
                st.gen.close()
                self._finish(st, exhausted=False, aborted=True)
                return
        self._seq += 1
        req = Request(st.name, cost, target, items, now, self._seq, spec.priority, spec.weight)
        st.req = req
        self.policy.add(req, self.bucket)

    def _grant(self, req: Request, now: float) -> None:
        st = self._state[req.task]
        self.policy.granted(req)
        self._announced.discard(req.seq)
        self._note_promotion(req, now)  # promoted and granted at once: still a promotion
        self._promoted.discard(req.seq)
        st.req = None
        st.lease = req.lease
        wait = now - req.since
        st.grants += 1
        if wait > st.max_wait:
            st.max_wait = wait
        if req.items and st.first_grant is None:
            st.first_grant = now - self.t0
        if st.work_since is not None:
            st.max_no_progress = max(st.max_no_progress, now - st.work_since)
            st.work_since = None
        self.events.emit(now - self.t0, "grant", st.name, self.bucket.balance(now), req.target,
                         req.cost, req.items, wait)
        self._advance(st)

    def _finish(self, st: TaskState, exhausted: bool, aborted: bool = False, backoff: float = 0.0,
                error: str | None = None):
        now = self.clock.now()
        st.gen = None
        st.req = None
        if st.lease is not None:  # the run failed between its grant and Keepa's answer
            self.policy.release(st.lease)
            st.lease = None
        if not aborted and not backoff and st.work_since is not None:
            st.max_no_progress = max(st.max_no_progress, now - st.work_since)
            st.work_since = None
        detail = {"outcome": "aborted" if aborted else "fault" if error
                  else "exhausted" if exhausted else "ok"}
        if error:
            detail["error"] = error
        self.events.emit(now - self.t0, "run_finish", st.name, self.bucket.balance(now),
                         items=st.run_items, detail=detail)
        if exhausted:
            st.done = True
            return
        st.next_start = st.task.next_start(self, st.run_started, now + backoff)
        skipped = st.spec.schedule.ticks_between(st.run_started, st.next_start)
        if skipped:
            self.events.emit(now - self.t0, "ticks_skipped", st.name, self.bucket.balance(now), items=skipped,
                             detail={"next_start_s": round(st.next_start - self.t0, 3)})

    def _close(self, end: float) -> None:
        self.ended_at = end
        self.policy.close()
        if self.policy.waiting:  # the log's last word on each wait: still waiting at the end
            self._heartbeat(end)
        for st in self.states:
            if st.req is not None:
                st.max_wait = max(st.max_wait, end - st.req.since)
            if st.work_since is not None:
                st.max_no_progress = max(st.max_no_progress, end - st.work_since)
            if st.gen is not None:
                st.gen.close()

    # -- the context tasks see -------------------------------------------------
    def call(self, task, estimate: float, items: int, fn, *args):
        """Admit at the target for ``estimate`` tokens, then make one Keepa call; on a 429, sync and wait again.

        ``estimate`` only sets the admission target: Keepa charges what it charges, and the
        response's envelope is the engine's new balance.
        """
        st = self._state[task.name]
        must_wait = estimate > 0
        while True:
            if must_wait:
                yield estimate, items
            self.current = st.name
            try:
                resp = fn(*args)
            except NotEnoughTokens as e:
                self._on_refused(st, e.envelope)
                must_wait = True
                continue
            self._on_response(st, resp, items, estimate)
            return resp

    def _on_refused(self, st, env) -> None:
        now = self.clock.now()
        st.refused += 1
        if env is not None:  # a refusal means the server's balance is <= 0, whatever it reports
            self.bucket.sync(min(env.tokens_left, 0.0), now, env.refill_rate, env.refill_in_ms,
                             env.token_flow_reduction)
        self.policy.settle(st.lease, env, 0.0, self.bucket, now)
        st.lease = None
        self.events.emit(now - self.t0, "429", st.name, self.bucket.balance(now), cost=0,
                         detail={"refill_in_ms": env.refill_in_ms} if env is not None else None)

    def sync(self, env, task: str | None = None, always: bool = False) -> None:
        """Replace the bucket estimate with Keepa's word; log it if it moved the estimate (or ``always``).

        ``detail.estimate`` is the estimate it replaced, so ``balance - estimate`` is the correction.
        """
        now = self.clock.now()
        rate = self.bucket.rate
        old = self.bucket.sync(env.tokens_left, now, env.refill_rate, env.refill_in_ms, env.token_flow_reduction)
        if always or abs(old - env.tokens_left) > 1e-6 or rate != self.bucket.rate:
            detail = {"estimate": round(old, 3), "refill_rate": env.refill_rate}
            if env.token_flow_reduction:
                detail["token_flow_reduction"] = env.token_flow_reduction
            self.events.emit(now - self.t0, "sync", task, env.tokens_left, detail=detail)

    def _on_response(self, st, resp, items, estimate) -> None:
        """Debit the estimate, then let the envelope correct it: a sync's correction is the estimate's error."""
        now = self.clock.now()
        st.spent += resp.consumed
        self.bucket.spend(estimate, now)
        if resp.envelope is not None:
            self.sync(resp.envelope, st.name)
        self.policy.settle(st.lease, resp.envelope, resp.consumed, self.bucket, now)
        st.lease = None
        if resp.consumed:
            self.events.emit(now - self.t0, "spend", st.name, self.bucket.balance(now),
                             cost=resp.consumed, items=items)

    def fault(self, kind: str, message: str, attempt: int) -> None:
        """A transient failure the transport retried (each is logged exactly once)."""
        now = self.clock.now()
        self.events.emit(now - self.t0, "fault", self.current, self.bucket.balance(now),
                         detail={"kind": kind, "message": message, "attempt": attempt})

    def found(self, task, n: int) -> None:
        now = self.clock.now()
        self.events.emit(now - self.t0, "found", task.name, self.bucket.balance(now), items=n)

    def _committed(self, st, n, detail):
        now = self.clock.now()
        st.items += n
        st.run_items += n
        self.events.emit(now - self.t0, "upsert", st.name, self.bucket.balance(now), items=n, detail=detail)

    def store_new(self, task, rows, refs, watermark) -> None:
        st = self._state[task.name]
        self.store.commit_new(task.name, rows, refs, watermark, self.clock.now())
        self._committed(st, len(refs), {"watermark": watermark.last_update})

    def store_backfill(self, task, rows, refs, checkpoint) -> None:
        st = self._state[task.name]
        self.store.commit_backfill(task.name, rows, refs, checkpoint, self.clock.now())
        self._committed(st, len(refs), {"page": checkpoint[0], "offset": checkpoint[1]})
