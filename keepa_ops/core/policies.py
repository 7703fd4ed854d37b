"""Admission policies: which waiting request gets the shared bucket next, and when.

Every policy answers two questions about its waiting requests: ``choose`` (which
one may spend now, if any) and ``next_time`` (the earliest time that answer can
change without a new request). The engine sleeps until then; nothing polls.

``threshold`` (legacy)
    A request waits until balance >= cost + threshold. Whoever's target is
    reached first wins, so a task with a lower target can take every refill
    from one with a higher target: the 2026-02-04 starvation.

``priority``
    Admits at balance >= cost: the order protects the urgent task, so the legacy
    threshold reserve is not stacked on top (with it, the seed's two first
    batches would need 406 tokens, 81 minutes, and no order could serve both
    within an hour). Strict head-of-line by priority (1 = most urgent) with aging. Only the head
    may spend, when balance >= its target; so while a more urgent task waits,
    a less urgent one never takes tokens that would delay it. A request that has
    waited ``B - fill(target)`` is promoted (B = starvation bound, fill(x) =
    60 x / refill rate, the time to earn x tokens from an empty bucket); promoted
    requests go ahead of unpromoted ones, earliest deadline (since + B) first.
    A promoted request at the head is granted within fill(target) of promotion,
    so within B, unless another promoted request with an earlier deadline is
    ahead of it. With two tasks that can only happen when the pair of batches
    costs more than one bound's refill (``cost_1 + cost_2 > B x rate / 60``),
    which no policy could serve within B anyway.

``fair``
    Admits at balance >= cost, like ``priority``. Weighted fair queuing of spends (self-clocked): each request gets a finish
    tag ``max(V, last tag of its task) + cost / weight``; the smallest tag is the
    head and is granted at balance >= its target; V is the tag last granted.
    Busy tasks share the refill in proportion to their weights.

``greedy``
    Keepa's own rule and nothing else: any waiting request spends while the
    balance is > 0, first come first served. The baseline that digs deficits.
"""
from __future__ import annotations

from ..keepa.bucket import EPS, INF, TokenBucket


class Request:
    """One task asking for ``cost`` tokens, to be admitted at balance >= ``target``."""

    __slots__ = ("task", "cost", "target", "items", "since", "seq", "priority", "weight",
                 "promote_at", "tag", "wid", "lease")

    def __init__(self, task, cost, target, items, since, seq, priority=1, weight=1.0):
        self.task = task
        self.cost = cost
        self.target = target
        self.items = items
        self.since = since
        self.seq = seq
        self.priority = priority
        self.weight = weight
        self.promote_at = INF
        self.tag = 0.0
        self.wid = None    # a shared gate's handles: its waiter id, then the lease it granted
        self.lease = None

    def __repr__(self):
        return f"Request({self.task!r}, cost={self.cost:g}, target={self.target:g}, since={self.since:g})"


def promotion_time(req: Request, bound: float, rate: float) -> float:
    """When a ``priority`` request is promoted: early enough that its target refills within ``bound``."""
    return req.since + max(0.0, bound - req.target * 60.0 / rate)


class Policy:
    name = "?"

    def __init__(self):
        self.waiting: list[Request] = []

    @staticmethod
    def target(cost: float, threshold: float) -> float:
        return cost + threshold

    def add(self, req: Request, bucket: TokenBucket) -> None:
        self.waiting.append(req)

    def granted(self, req: Request) -> None:
        self.waiting.remove(req)

    def head(self, now: float) -> Request | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def choose(self, now: float, bucket: TokenBucket) -> Request | None:
        head = self.head(now)
        if head is not None and bucket.balance(now) >= head.target - EPS:
            return head
        return None

    def next_time(self, now: float, bucket: TokenBucket) -> float:
        head = self.head(now)
        return INF if head is None else bucket.time_until(head.target, now)

    # A policy that shares its bucket with other processes hears of every call's outcome;
    # an in-process policy has nothing to do: the engine's own bucket is the whole truth.
    def settle(self, lease, envelope, consumed: float, bucket: TokenBucket, now: float) -> None:
        """Keepa answered a call made under ``lease`` (None: a call that needed no admission)."""

    def release(self, lease) -> None:
        """A call under ``lease`` ended with no answer from Keepa."""

    def close(self) -> None:
        """The engine stops: give up what is still waiting."""


class ThresholdPolicy(Policy):
    name = "threshold"

    def choose(self, now, bucket):
        b = bucket.balance(now)
        best = None
        for r in self.waiting:
            if b >= r.target - EPS and (best is None or (r.target, r.priority, r.seq) < (best.target, best.priority, best.seq)):
                best = r
        return best

    def next_time(self, now, bucket):
        return min((bucket.time_until(r.target, now) for r in self.waiting), default=INF)


class PriorityPolicy(Policy):
    name = "priority"

    @staticmethod
    def target(cost, threshold):
        return cost

    def __init__(self, starvation_bound: float = 3600.0):
        super().__init__()
        self.bound = float(starvation_bound)

    def add(self, req, bucket):
        req.promote_at = promotion_time(req, self.bound, bucket.rate)
        self.waiting.append(req)

    def _rank(self, r, now):
        if now >= r.promote_at - EPS:
            return (0, r.since + self.bound, r.priority, r.seq)
        return (1, r.priority, r.since, r.seq)

    def head(self, now):
        return min(self.waiting, key=lambda r: self._rank(r, now), default=None)

    def next_time(self, now, bucket):
        t = super().next_time(now, bucket)
        for r in self.waiting:
            if now < r.promote_at - EPS < t:
                t = r.promote_at
        return t


class FairPolicy(Policy):
    name = "fair"

    @staticmethod
    def target(cost, threshold):
        return cost

    def __init__(self):
        super().__init__()
        self.virtual = 0.0
        self.last_tag: dict[str, float] = {}

    def add(self, req, bucket):
        req.tag = max(self.virtual, self.last_tag.get(req.task, 0.0)) + req.cost / req.weight
        self.waiting.append(req)

    def head(self, now):
        return min(self.waiting, key=lambda r: (r.tag, r.priority, r.seq), default=None)

    def granted(self, req):
        super().granted(req)
        self.virtual = req.tag
        self.last_tag[req.task] = req.tag


class GreedyPolicy(Policy):
    name = "greedy"
    POSITIVE = 1e-6

    @staticmethod
    def target(cost, threshold):
        return GreedyPolicy.POSITIVE

    def head(self, now):
        return min(self.waiting, key=lambda r: r.seq, default=None)


POLICIES = {"threshold": ThresholdPolicy, "priority": PriorityPolicy, "fair": FairPolicy, "greedy": GreedyPolicy}


def admission_target(policy: str, cost: float, threshold: float) -> float:
    """The balance at which ``policy`` admits a request of ``cost`` (always > 0)."""
    return max(POLICIES[policy].target(cost, threshold), GreedyPolicy.POSITIVE)


def make_policy(name: str, starvation_bound: float = 3600.0) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}")
    return PriorityPolicy(starvation_bound) if name == "priority" else POLICIES[name]()
