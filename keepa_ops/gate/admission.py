"""The engine's policy when the bucket is shared: every grant is asked of the gate.

``SharedAdmission`` is an ``core.policies.Policy`` to the engine: it keeps this process's
waiting requests, and for each one asks the gate, which applies the configured policy
(``priority``, ``threshold``, ``fair``, ``greedy``) across every process on the key. The
engine's own bucket becomes an estimate of the shared balance, set from each answer.

Invariants: a request is granted only when the gate granted it (it then holds the
gate's lease, ``req.lease``); every Keepa envelope the engine sees is settled with the
gate; a request still waiting when the engine closes is withdrawn and a lease still
open is released, so a clean exit leaves nothing behind (a killed process leaves leases
and waiters that expire by themselves).
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..core.policies import Policy, promotion_time
from .backends import GateUnavailable
from .gate import Gate


class SharedAdmission(Policy):
    OUTAGE_RETRY_S = 1.0  # real seconds between tries while the backend is unreachable

    def __init__(self, gate: Gate, on_fault=None):
        super().__init__()
        self.gate = gate
        self.name = gate.policy
        self.bound = gate.config.starvation_bound
        self.on_fault = on_fault    # on_fault(kind, message, attempt): the engine logs it as a fault event
        self._poll_at = -math.inf  # engine time of the next poll of the gate
        self._outage = 0           # failed backend calls in a row (0: the backend answers)
        self.polls = 0

    def _call(self, name, *args):
        """One gate operation; None if the backend is unreachable (nothing is admitted until it is back)."""
        try:
            out = getattr(self.gate, name)(*args)
        except GateUnavailable as e:
            self._outage += 1
            if self.on_fault is not None:
                self.on_fault("gate", str(e), self._outage)
            return None
        if self._outage:
            self._outage = 0
        return out

    def add(self, req, bucket):
        if self.name == "priority":  # when the gate will promote it (the engine logs a promotion then)
            req.promote_at = promotion_time(req, self.bound, bucket.rate)
        req.wid = self._call("enqueue", req.task, req.cost)
        self.waiting.append(req)
        self._poll_at = -math.inf

    def choose(self, now, bucket):
        if not self.waiting or now < self._poll_at:
            return None
        wake = math.inf
        for r in list(self.waiting):
            if r.wid is None:  # not queued yet: the backend was unreachable when it asked
                r.wid = self._call("enqueue", r.task, r.cost)
                if r.wid is None:
                    self._poll_at = now + self.OUTAGE_RETRY_S * self.gate.scale
                    return None
            answer = self._call("poll", r.wid)
            if answer is None:
                self._poll_at = now + self.OUTAGE_RETRY_S * self.gate.scale
                return None
            kind, x, bal = answer
            self.polls += 1
            bucket.sync(bal, now)
            if kind == "granted":
                r.lease = x
                return r
            if kind == "gone":  # timed out of the queue (a stalled process, a restarted Redis): join again
                r.wid = None
                wake = now
            else:
                wake = min(wake, now + x)
        self._poll_at = min(wake, now + self.gate.poll_s * self.gate.scale)
        return None

    def next_time(self, now, bucket):
        return max(self._poll_at, now) if self.waiting else math.inf

    def settle(self, lease, envelope, consumed, bucket, now) -> None:
        if envelope is None:
            return
        bal = self._call("settle", lease, _with_consumed(envelope, consumed))
        if bal is not None:
            bucket.sync(bal, now)

    def release(self, lease) -> None:
        self._call("release", lease)

    def close(self) -> None:
        for r in self.waiting:
            if r.wid is not None:
                self._call("withdraw", r.wid)


def _with_consumed(envelope, consumed):
    return replace(envelope, consumed=float(consumed))
