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

from ..core.policies import Policy
from .gate import Gate


class SharedAdmission(Policy):
    def __init__(self, gate: Gate):
        super().__init__()
        self.gate = gate
        self.name = gate.policy
        self.bound = gate.config.starvation_bound
        self._poll_at = -math.inf  # engine time of the next poll of the gate
        self.polls = 0

    def add(self, req, bucket):
        if self.name == "priority":  # when the gate will promote it (the engine logs a promotion then)
            req.promote_at = req.since + max(0.0, self.bound - req.target * 60.0 / bucket.rate)
        req.wid = self.gate.enqueue(req.task, req.cost)
        req.lease = None
        self.waiting.append(req)
        self._poll_at = -math.inf

    def choose(self, now, bucket):
        if not self.waiting or now < self._poll_at:
            return None
        wake = math.inf
        for r in list(self.waiting):
            kind, x, bal = self.gate.poll(r.wid)
            self.polls += 1
            bucket.sync(bal, now)
            if kind == "granted":
                r.lease = x
                return r
            if kind == "gone":  # timed out of the queue (a stalled process, a restarted Redis): join again
                r.wid = self.gate.enqueue(r.task, r.cost)
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
        bal = self.gate.settle(lease, _with_consumed(envelope, consumed))
        bucket.sync(bal, now)

    def release(self, lease) -> None:
        self.gate.release(lease)

    def close(self) -> None:
        for r in self.waiting:
            self.gate.withdraw(r.wid)


def _with_consumed(envelope, consumed):
    from dataclasses import replace
    return replace(envelope, consumed=float(consumed))
