"""The gate: one Keepa key's bucket and admission policy, shared by every process that calls Keepa.

    gate = keepa_ops.Gate.from_url("sqlite:///runs/bucket.db", "data/live_priority.yaml")
    with gate.acquire("update_recent_deals", cost=20) as permit:
        r = call_keepa()
        permit.settle(r)

``acquire`` blocks until the policy admits the task (``acquire_async`` awaits); the permit
is a lease that ends at ``settle`` (or ``release``, or its deadline if the process dies).
``settle`` takes what Keepa answered: a keepa-ops ``Response`` or ``Envelope``, a
``NotEnoughTokens`` (a 429 still tells the balance), or the JSON body of a Keepa response
as a dict.

Units at this face are Keepa's: tokens and seconds. Inside, the ledger keeps integer
milli-tokens and microseconds (see ``ledger.py``).

If the backend cannot be reached the gate fails closed (``GateUnavailable``), unless the
URL says ``fallback=local&processes=N``: then this process admits from a local bucket at
the refill rate divided by N, relying on Keepa's 429s (which cost nothing) to correct it;
never from an unlimited one.
"""
from __future__ import annotations

import asyncio
import math
import sys
import time
from urllib.parse import parse_qs, urlsplit

from ..config import Config, load_config
from ..core.policies import admission_target
from ..errors import AdmissionTimeout, ConfigError, NotEnoughTokens
from ..keepa.wire import Envelope, Response
from . import ledger
from .backends import US, GateUnavailable, MemoryBackend, RedisBackend, SQLiteBackend

WAITER_TTL_S = 6.0   # real seconds: a waiter that has not polled for this long leaves the queue
LEASE_SLACK_S = 1.0  # real seconds a lease outlives the client's own timeouts
MIN_POLL_S = 0.02    # real seconds between two polls of one waiter, at least: while another waiter is the
                     # admissible head, "now" is the answer, and polling at once would only contend for it


def _mt(tokens: float) -> int:
    return int(round(float(tokens) * 1000))


def open_backend(url: str):
    """The backend a bucket URL names: ``memory://``, ``sqlite:///path``, ``redis://host:port/db``."""
    parts = urlsplit(url)
    name = parse_qs(parts.query).get("name", ["keepa"])[0]
    if parts.scheme == "memory":
        return MemoryBackend()
    if parts.scheme == "sqlite":
        # sqlite:///relative/bucket.db or sqlite:////absolute/bucket.db, as SQLAlchemy spells them
        path = parts.netloc + parts.path[1:] if parts.path.startswith("/") else parts.netloc + parts.path
        if not path:
            raise ConfigError("--bucket", f"{url!r} names no file.", "use sqlite:///path/bucket.db")
        return SQLiteBackend(path, name)
    if parts.scheme in ("redis", "rediss", "unix"):
        base = url.split("?", 1)[0]
        return RedisBackend(base, name)
    raise ConfigError("--bucket", f"{url!r} is not a bucket URL.",
                      "use sqlite:///path/bucket.db or redis://host:port/db")


class Permit:
    """An admission: a lease on ``cost`` tokens until it is settled or released."""

    def __init__(self, gate: "Gate", task: str, cost: float, lease: str, waited_s: float):
        self.gate, self.task, self.cost, self.lease, self.waited_s = gate, task, cost, lease, waited_s
        self.settled = False

    def settle(self, answer) -> float:
        """Apply Keepa's answer to the shared balance; returns the balance, in tokens."""
        self.settled = True
        return self.gate.settle(self.lease, answer)

    def release(self) -> None:
        """End the lease without an answer (the call failed before Keepa replied)."""
        if not self.settled:
            self.settled = True
            self.gate.release(self.lease)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, NotEnoughTokens) and not self.settled:
            self.settle(exc)
        self.release()
        return False

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        return self.__exit__(exc_type, exc, tb)


class Gate:
    """Admission to one Keepa key for every task of ``config``, through one shared backend.

    Invariant: every method is one atomic backend operation; the gate holds no lock across
    a Keepa call, only a lease that expires by itself.
    """

    def __init__(self, backend, config: Config, *, scale: float = 1.0, start_tokens: float | None = None,
                 fallback_processes: int | None = None, waiter_ttl: float = WAITER_TTL_S):
        self.backend = backend
        self.config = config
        self.scale = float(scale)
        self.policy = config.policy
        start = config.start_tokens if start_tokens is None else start_tokens
        self.init = ledger.new_state(rate_mt=_mt(config.refill_per_minute), cap_mt=_mt(config.capacity),
                                     bal_mt=_mt(min(start, config.capacity)), policy=config.policy,
                                     bound_us=int(config.starvation_bound * US),
                                     scale=self.scale, waiter_ttl_us=int(waiter_ttl * self.scale * US), now=0,
                                     stepped=config.stepped)
        k = config.keepa
        self.lease_us = int((k.timeout * (k.retries + 1) + LEASE_SLACK_S) * self.scale * US)
        self.fallback_processes = fallback_processes
        self.fell_back: str | None = None  # why this process admits from a local bucket, if it does
        self.poll_s = waiter_ttl / 3       # real seconds between a waiter's polls, at most

    @classmethod
    def from_url(cls, url: str, config, *, scale: float = 1.0, start_tokens: float | None = None,
                 waiter_ttl: float = WAITER_TTL_S) -> "Gate":
        cfg = load_config(config) if not isinstance(config, Config) else config
        q = parse_qs(urlsplit(url).query)
        fallback = None
        if q.get("fallback", [""])[0] == "local":
            try:
                fallback = int(q.get("processes", [""])[0])
                assert fallback >= 1
            except (ValueError, AssertionError):
                raise ConfigError("--bucket", "fallback=local needs processes=N (N >= 1), the processes that "
                                  "share the key.", "add &processes=4") from None
        elif "fallback" in q:
            raise ConfigError("--bucket", f"fallback={q['fallback'][0]!r} is not a fallback.", "use fallback=local")
        try:
            backend = open_backend(url)
        except GateUnavailable as e:
            if fallback is None:
                raise
            gate = cls(MemoryBackend(), cfg, scale=scale, start_tokens=0.0)
            gate._fall_back(str(e), fallback)
            return gate
        return cls(backend, cfg, scale=scale, start_tokens=start_tokens, fallback_processes=fallback,
                   waiter_ttl=waiter_ttl)

    # -- one backend operation each ---------------------------------------------------------------
    def _op(self, name, *args):
        try:
            return getattr(self.backend, name)(self.init, *args)
        except GateUnavailable as e:
            if self.fallback_processes is None or self.fell_back:
                raise
            self._fall_back(str(e), self.fallback_processes)
            return getattr(self.backend, name)(self.init, *args)

    def _fall_back(self, why: str, processes: int) -> None:
        self.backend = MemoryBackend()
        self.init = dict(self.init, rate=max(1, self.init["rate"] // processes),
                         cap=max(1, self.init["cap"] // processes), bal=0)
        self.fell_back = why
        print(f"keepa-ops: {why.split('. Fix')[0]}; admitting from a local bucket at 1/{processes} of the refill "
              "until it is back (restart to rejoin)", file=sys.stderr)

    def _remember(self, bal_mt: int) -> float:
        self.init["bal"] = bal_mt  # a recreated state (a flushed Redis) starts from the last balance seen
        return bal_mt / 1000.0

    def target(self, task: str, cost: float) -> float:
        spec = self.config.tasks.get(task)
        return admission_target(self.policy, cost, spec.threshold if spec else 0.0)

    def _request(self, task: str, cost: float, priority: int | None = None) -> tuple:
        """What the ledger needs of a request: task, cost and target (milli-tokens), priority, weight.

        ``priority`` overrides the config's (a task the config does not name has priority 1)."""
        spec = self.config.tasks.get(task)
        if priority is None:
            priority = spec.priority if spec else 1
        return (task, _mt(cost), _mt(self.target(task, cost)), int(priority), spec.weight if spec else 1.0)

    def _wake_in(self, us: int) -> float:
        """A ledger's wait (microseconds, -1: no estimate) as Keepa seconds, at least ``MIN_POLL_S`` real."""
        return max(us / US, MIN_POLL_S * self.scale) if us >= 0 else math.inf

    def enqueue(self, task: str, cost: float, *, priority: int | None = None) -> str:
        return self._op("enqueue", *self._request(task, cost, priority))

    def ask(self, task: str, cost: float, *, priority: int | None = None,
            resume: str | None = None) -> tuple[str, str | float, float, str]:
        """``enqueue`` and ``poll`` in one backend step: ``poll``'s answer and the waiter's id.

        ``resume``: the id of a parked waiter of this task, which keeps its place and age."""
        kind, x, bal, wid = self._op("ask", *self._request(task, cost, priority), self.lease_us, resume or "")
        return kind, self._wake_in(x) if kind == "wait" else x, self._remember(bal), wid

    def park(self, wid: str, away_s: float) -> tuple[str, float, float]:
        """Keep waiter ``wid`` in the queue, unpolled, for ``away_s`` real seconds (and the waiter TTL
        after): ``("parked", seconds, balance)`` as ``poll`` would answer, or ``("gone", 0, balance)``."""
        kind, x, bal = self._op("park", wid, int(max(0.0, away_s) * self.scale * US))
        return kind, self._wake_in(x) if kind == "parked" else x, self._remember(bal)

    def poll(self, wid: str) -> tuple[str, str | float, float]:
        """``("granted", lease, balance)``, ``("wait", seconds, balance)`` (seconds of Keepa time, at least
        ``MIN_POLL_S`` real; inf: no estimate) or ``("gone", 0, balance)`` (the waiter timed out of the
        queue: enqueue again)."""
        kind, x, bal = self._op("poll", wid, self.lease_us)
        return kind, self._wake_in(x) if kind == "wait" else x, self._remember(bal)

    def settle(self, lease: str | None, answer) -> float:
        env, consumed = _envelope(answer)
        tfr = env.token_flow_reduction or 0.0
        rate = env.refill_rate - tfr if env.refill_rate else 0.0
        # refillIn is in real milliseconds (a fake Keepa running K times faster divides by K): times the
        # gate's scale, it is Keepa time, as the gate's clock is
        refill_in = (int(env.refill_in_ms * 1000 * self.scale)
                     if env.refill_in_ms is not None and env.refill_in_ms >= 0 else -1)
        bal = self._op("settle", lease, _mt(env.tokens_left), _mt(consumed), int(env.timestamp_ms or 0), _mt(rate),
                       refill_in)
        return self._remember(bal)

    def release(self, lease: str) -> float:
        return self._remember(self._op("release", lease))

    def withdraw(self, wid: str) -> None:
        self._op("withdraw", wid)

    def state(self) -> dict:
        return self._op("state")

    def close(self) -> None:
        self.backend.close()

    # -- the library face -------------------------------------------------------------------------
    def _admission(self, task: str, cost: float, timeout: float | None, priority: int | None,
                   resume: str | None, hold_place: bool):
        """Yields how long to sleep (real seconds) until admitted; returns the Permit.

        Withdraws the waiter on any exit, except a timeout with ``hold_place``: then the waiter is
        parked until the predicted admission and ``AdmissionTimeout`` carries its id."""
        t0 = time.monotonic()
        kind, x, _, wid = self.ask(task, cost, priority=priority, resume=resume)
        try:
            while True:
                if kind == "granted":
                    return Permit(self, task, cost, x, time.monotonic() - t0)
                if kind == "gone":
                    kind, x, _, wid = self.ask(task, cost, priority=priority)
                    continue
                delay = min(self.poll_s, x / self.scale)
                if timeout is not None:
                    left = timeout - (time.monotonic() - t0)
                    if left <= 0:
                        retry_in = x / self.scale if math.isfinite(x) else None
                        if hold_place and self.park(wid, timeout if retry_in is None else retry_in)[0] == "parked":
                            raise AdmissionTimeout(task, cost, time.monotonic() - t0, retry_in, wid)
                        raise AdmissionTimeout(task, cost, time.monotonic() - t0, retry_in, None)
                    delay = min(delay, left)
                yield max(delay, 0.0005)
                kind, x, _ = self.poll(wid)
        except BaseException as e:
            if not (isinstance(e, AdmissionTimeout) and e.waiter):  # a held place stays parked
                self.withdraw(wid)
            raise

    def acquire(self, task: str, cost: float, *, timeout: float | None = None, priority: int | None = None,
                resume: str | None = None, hold_place: bool = False) -> Permit:
        """Block until ``task`` may spend ``cost`` tokens.

        ``timeout``: real seconds, then ``AdmissionTimeout`` (a ``TimeoutError``) with the predicted
        admission; with ``hold_place`` the gate keeps the task's place until then, and the error's
        ``waiter`` is passed back as ``resume`` by the retry. ``priority`` overrides the config's."""
        steps = self._admission(task, cost, timeout, priority, resume, hold_place)
        try:
            while True:
                time.sleep(next(steps))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    async def acquire_async(self, task: str, cost: float, *, timeout: float | None = None,
                            priority: int | None = None, resume: str | None = None,
                            hold_place: bool = False) -> Permit:
        """``acquire`` for asyncio: waits with ``asyncio.sleep``; each backend step is one short call."""
        steps = self._admission(task, cost, timeout, priority, resume, hold_place)
        try:
            while True:
                await asyncio.sleep(next(steps))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()


def _envelope(answer) -> tuple[Envelope, float]:
    """Keepa's envelope and what the call consumed, from any of the answers ``settle`` takes."""
    if isinstance(answer, NotEnoughTokens):
        return answer.envelope, 0.0
    if isinstance(answer, Response):
        return answer.envelope, answer.consumed
    if isinstance(answer, Envelope):
        return answer, answer.consumed
    if isinstance(answer, dict):
        env = Envelope.from_json(answer)
        return env, env.consumed
    raise TypeError(f"settle() takes a Response, an Envelope, NotEnoughTokens or a Keepa JSON body, "
                    f"not {type(answer).__name__}")
