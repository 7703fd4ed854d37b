"""Celery tasks that call Keepa through keepa-ops' shared gate: acquire, call, settle.

    app.conf.keepa_ops = {"bucket": "redis://localhost:6379/1", "config": "keepa.yaml"}

    @app.task(bind=True, base=GatedTask, keepa_priority=1)
    def update_recent_deals(self):
        with self.keepa(cost=5) as permit:       # was: token_manager.request_permission_for_call(5)
            body = fetch_deals()
            permit.settle(body)                  # was: token_manager.sync_tokens(body["tokensLeft"])

``self.keepa(cost)`` takes the place of the legacy TokenManager's two entry points (ask
permission for a call of cost C; wait for tokens): it returns once the gate's policy admits
the task, as a ``Permit`` to settle with Keepa's answer (the JSON body, a 429 included).

A waiting task does not hold its pool process for longer than ``max_hold`` real seconds
(``keepa_max_hold`` on the task, else ``app.conf.keepa_ops["max_hold"]``, else
``MAX_HOLD_S``). Past it, the task hands the process back with ``self.retry`` at the moment
the gate predicts it will be admitted. The gate keeps its place in the queue until then
(parked, with its age, so a priority task stays ahead and an aging one still gets promoted),
and the retry resumes that place. These retries have no limit (waiting is not failing), but they
do count in ``self.request.retries``. The retry runs the task again from its start, so the first
Keepa call of a task should be the one worth waiting for, and the task idempotent up to it.

Settings (``app.conf.keepa_ops``): ``bucket`` (a bucket URL, see ``Gate.from_url``),
``config`` (a keepa-ops YAML config, or a ``Config``: refill, policy, bound and the tasks'
priorities), optional ``max_hold`` and ``scale`` (for a fake Keepa running K times faster).
A task's keepa-ops name is ``keepa_name``, else the last part of its Celery name.

Invariants: one gate per process (made after the pool forks, never shared across a fork);
nothing here logs at INFO or above, so the worker's log holds only the pipeline's own lines
and Celery's; Celery is imported only by this module (``pip install 'keepa-ops[celery]'``).
"""
from __future__ import annotations

import math
import os
import threading

from celery import Task

from .errors import AdmissionTimeout, ConfigError
from .gate import Gate, Permit

MAX_HOLD_S = 10.0           # real seconds a task may wait for tokens while it holds its pool process
WAITER_HEADER = "keepa_ops_waiter"  # the retry's message header: the gate's waiter it resumes

_gates: dict[tuple, Gate] = {}
_lock = threading.Lock()


def gate_for(app) -> Gate:
    """This process's gate for ``app`` (created on first use, again after a fork)."""
    conf = app.conf.get("keepa_ops") or {}
    url, config = conf.get("bucket"), conf.get("config")
    if not url or config is None:
        raise ConfigError("app.conf.keepa_ops", "needs 'bucket' (a bucket URL) and 'config' (a keepa-ops config).",
                          "set app.conf.keepa_ops = {'bucket': 'redis://host:6379/1', 'config': 'keepa.yaml'}")
    key = (os.getpid(), url, id(config) if not isinstance(config, str) else config)
    with _lock:
        gate = _gates.get(key)
        if gate is None:
            gate = Gate.from_url(url, config, scale=float(conf.get("scale", 1.0)))
            _gates[key] = gate
    return gate


class GatedTask(Task):
    """A Celery task base class whose Keepa calls wait in the shared gate, not in the pool."""

    abstract = True
    keepa_name: str | None = None      # the task's name in the keepa-ops config
    keepa_priority: int | None = None  # overrides the config's priority (1 = most urgent)
    keepa_max_hold: float | None = None

    @property
    def keepa_task(self) -> str:
        return self.keepa_name or self.name.rsplit(".", 1)[-1]

    def _max_hold(self) -> float:
        if self.keepa_max_hold is not None:
            return float(self.keepa_max_hold)
        return float((self.app.conf.get("keepa_ops") or {}).get("max_hold", MAX_HOLD_S))

    def keepa(self, cost: float) -> Permit:
        """Wait (at most the hold bound) until this task may spend ``cost`` tokens.

        Returns a ``Permit``, a context manager: settle it with Keepa's answer. Past the bound,
        raises Celery's ``Retry`` for the predicted admission, the task's place kept for it."""
        gate = gate_for(self.app)
        req = self.request
        resume = getattr(req, WAITER_HEADER, None) if req is not None and not req.called_directly else None
        if resume:  # a retry's place is resumed by its first call only
            setattr(req, WAITER_HEADER, None)
        hold = self._max_hold()
        try:
            return gate.acquire(self.keepa_task, cost, timeout=hold, priority=self.keepa_priority,
                                resume=resume, hold_place=True)
        except AdmissionTimeout as e:
            countdown = hold if e.retry_in is None else max(e.retry_in, 0.0)
            headers = {WAITER_HEADER: e.waiter} if e.waiter else {}
            # max_retries=None would mean the task's own limit (3 by default): waiting for tokens is not a failure
            raise self.retry(countdown=countdown, max_retries=math.inf, headers=headers) from None


__all__ = ["GatedTask", "gate_for", "MAX_HOLD_S"]
