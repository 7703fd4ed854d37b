"""The shared bucket's rules, as plain functions over one small state: Keepa's meter and the policies.

Every backend of a shared gate keeps one ``state`` (a dict) and runs these functions on it
atomically: the memory backend under a lock, the SQLite backend inside one
``BEGIN IMMEDIATE`` transaction, the Redis backend as ``ledger.lua``, a line-by-line
mirror of this file (the backend contract tests hold the two to the same grants).

Units, so that no process's float or clock can drift the shared balance:
* tokens are integer milli-tokens (``mt``); the refill carries its remainder, so
  ``bal(t)`` is exact however often it is read;
* time is integer microseconds of *gate time*, read only from the backend's own clock
  (SQLite's ``julianday('now')``, Redis ``TIME``) and multiplied by ``scale`` (a run
  against a fake Keepa running K times faster uses ``scale = K``). A client never sends
  a time, only durations, so skewed client clocks change nothing.

Invariants (the same as ``core.policies`` and ``keepa.bucket``):
* a request is admitted only if it is the policy's head and ``bal >= target > 0``; its
  cost is debited in full at once, so the balance may go negative;
* ``priority``: a request is promoted at ``since + max(0, bound - target / rate)``, and
  promoted requests go first, oldest deadline first; ``threshold``: the lowest target
  that the balance reaches; ``fair``: the smallest weighted-fair-queuing tag; ``greedy``:
  the oldest request, at any positive balance;
* a grant is a lease that ends at its deadline: a process killed mid-call leaves no
  reservation after it, and its debit stays until the next settle;
* a waiter that has not polled for ``waiter_ttl`` leaves the queue, unless it is parked: a
  waiter whose client steps away for a known time (a Celery task that gives its pool process
  back with a retry) keeps its place, its age and its rank until then plus ``waiter_ttl``;
* a resumed waiter (``ask`` with ``resume``) keeps its place and age and takes the new cost;
* the newest envelope (by Keepa's timestamp) sets the balance: ``tokensLeft`` less the
  leases still in flight; an older envelope only swaps its lease's estimate for what
  Keepa charged.
"""
from __future__ import annotations

MINUTE_US = 60_000_000
POLICIES = ("priority", "threshold", "fair", "greedy")


def new_state(*, rate_mt: int, cap_mt: int, bal_mt: int, policy: str, bound_us: int, scale: float,
              waiter_ttl_us: int, now: int, stepped: bool = False) -> dict:
    """``stepped``: Keepa adds ``rate`` once a minute, at ``phase`` (set from each envelope's ``refillIn``)."""
    return {"rate": rate_mt, "cap": cap_mt, "bal": bal_mt, "at": now, "rem": 0, "newest": -1,
            "policy": policy, "bound": bound_us, "scale": scale, "wttl": waiter_ttl_us, "virt": 0.0,
            "step": 1 if stepped else 0, "phase": 0, "seq": 0, "waiters": {}, "leases": {}, "tags": {}}


# -- the bucket ---------------------------------------------------------------------------------
def refill(s: dict, now: int) -> None:
    """Bring ``bal`` forward to ``now``, exactly: the fraction of a milli-token is carried in ``rem``."""
    dt = now - s["at"]
    if dt <= 0:
        return
    if s["step"]:
        steps = (now - s["phase"]) // MINUTE_US - (s["at"] - s["phase"]) // MINUTE_US
        s["at"] = now
        if steps > 0 and s["bal"] < s["cap"]:
            s["bal"] = min(s["cap"], s["bal"] + steps * s["rate"])
        return
    s["at"] = now
    if s["bal"] >= s["cap"]:
        s["rem"] = 0
        return
    need_us = ((s["cap"] - s["bal"]) * MINUTE_US) // s["rate"] + 1
    if dt >= need_us:
        s["bal"], s["rem"] = s["cap"], 0
        return
    num = dt * s["rate"] + s["rem"]
    s["bal"] = min(s["cap"], s["bal"] + num // MINUTE_US)
    s["rem"] = num % MINUTE_US


def until(s: dict, target: int, now: int) -> int:
    """Microseconds until ``bal`` reaches ``target`` (0 if it has; -1 if never: above the cap)."""
    if s["bal"] >= target:
        return 0
    if target > s["cap"]:
        return -1
    if s["step"]:
        steps = -(-(target - s["bal"]) // s["rate"])
        first = s["phase"] + ((now - s["phase"]) // MINUTE_US + 1) * MINUTE_US
        return first + (steps - 1) * MINUTE_US - now
    num = (target - s["bal"]) * MINUTE_US - s["rem"]
    return -(-num // s["rate"])


def expire(s: dict, now: int) -> None:
    """Drop leases past their deadline (their debit stays) and waiters that stopped polling."""
    for lid in [k for k, v in s["leases"].items() if v[2] <= now]:
        del s["leases"][lid]
    for wid in [k for k, v in s["waiters"].items() if v[8] <= now]:
        del s["waiters"][wid]


# -- the policies ---------------------------------------------------------------------------------
# A waiter is [task, cost, target, since, priority, weight, promote_at, tag, alive_until, seq].
def _rank(s: dict, w: list, now: int, bal: int):
    p = s["policy"]
    if p == "priority":
        if now >= w[6]:
            return (0, w[3] + s["bound"], w[4], w[9])
        return (1, w[4], w[3], w[9])
    if p == "threshold":  # only requests the balance reaches compete; lowest target first
        return (0 if bal >= w[2] else 1, w[2], w[4], w[9])
    if p == "fair":
        return (w[7], w[4], w[9])
    return (w[9],)


def head(s: dict, now: int) -> str | None:
    best, best_rank = None, None
    for wid, w in s["waiters"].items():
        r = _rank(s, w, now, s["bal"])
        if best is None or r < best_rank:
            best, best_rank = wid, r
    return best


def next_change(s: dict, now: int) -> int:
    """Microseconds until the head could be admitted or the order could change (-1: never by itself)."""
    if not s["waiters"]:
        return -1
    if s["policy"] == "threshold":
        ts = [until(s, w[2], now) for w in s["waiters"].values()]
        ts = [t for t in ts if t >= 0]
        return min(ts) if ts else -1
    t = until(s, s["waiters"][head(s, now)][2], now)
    if s["policy"] == "priority":
        for w in s["waiters"].values():
            d = w[6] - now
            if 0 < d and (t < 0 or d < t):
                t = d
    return t


# -- what clients ask -------------------------------------------------------------------------------
def _promote_at(s: dict, since: int, target_mt: int) -> int:
    """When a ``priority`` waiter asking since ``since`` is promoted: early enough to refill its target
    within the bound (``core.policies.promotion_time``, in integers)."""
    return since + max(0, s["bound"] - (target_mt * MINUTE_US) // s["rate"])


def enqueue(s: dict, now: int, task: str, cost_mt: int, target_mt: int, priority: int, weight: float) -> str:
    refill(s, now)
    expire(s, now)
    s["seq"] += 1
    wid = str(s["seq"])
    promote_at = _promote_at(s, now, target_mt)
    tag = 0.0
    if s["policy"] == "fair":
        tag = max(s["virt"], s["tags"].get(task, 0.0)) + cost_mt / 1000.0 / weight
        s["tags"][task] = tag
    s["waiters"][wid] = [task, cost_mt, max(1, target_mt), now, priority, weight, promote_at, tag,
                         now + s["wttl"], s["seq"]]
    return wid


def poll(s: dict, now: int, wid: str, lease_us: int) -> tuple:
    """``("granted", lease_id, bal)``, ``("wait", wake_in_us, bal)`` or ``("gone", 0, bal)``.

    A poll is the waiter's heartbeat. A grant debits the cost and opens a lease that ends
    ``lease_us`` from now.
    """
    refill(s, now)
    expire(s, now)
    w = s["waiters"].get(wid)
    if w is None:
        return ("gone", 0, s["bal"])
    w[8] = now + s["wttl"]
    if head(s, now) == wid and s["bal"] >= w[2]:
        del s["waiters"][wid]
        s["bal"] -= w[1]
        if s["policy"] == "fair":
            s["virt"] = w[7]
        s["seq"] += 1
        lid = str(s["seq"])
        s["leases"][lid] = [w[0], w[1], now + lease_us]
        return ("granted", lid, s["bal"])
    return ("wait", next_change(s, now), s["bal"])


def ask(s: dict, now: int, task: str, cost_mt: int, target_mt: int, priority: int, weight: float,
        lease_us: int, resume: str = "") -> tuple:
    """``enqueue`` then ``poll`` in one step: an admission that need not wait costs one round trip.

    ``resume``: a parked waiter of the same task, which comes back with this cost and target but keeps
    its ``since`` (so its promotion) and its sequence number; if it is gone, a new waiter is queued.
    Returns ``poll``'s answer, with the waiter's id in place of the wake time when it waits.
    """
    refill(s, now)
    expire(s, now)
    w = s["waiters"].get(resume) if resume else None
    if w is not None and w[0] == task:
        w[1], w[2], w[4], w[5] = cost_mt, max(1, target_mt), priority, weight
        w[6] = _promote_at(s, w[3], target_mt)
        wid = resume
    else:
        wid = enqueue(s, now, task, cost_mt, target_mt, priority, weight)
    kind, x, bal = poll(s, now, wid, lease_us)
    return (kind, x, bal, wid)


def park(s: dict, now: int, wid: str, away_us: int) -> tuple:
    """Keep waiter ``wid`` queued without polling for ``away_us`` (then ``waiter_ttl`` more).

    ``("parked", wake_in_us, bal)``, or ``("gone", 0, bal)`` if it already left the queue."""
    refill(s, now)
    expire(s, now)
    w = s["waiters"].get(wid)
    if w is None:
        return ("gone", 0, s["bal"])
    w[8] = now + max(0, away_us) + s["wttl"]
    return ("parked", next_change(s, now), s["bal"])


def settle(s: dict, now: int, lid: str | None, tokens_left_mt: int, consumed_mt: int, timestamp_ms: int,
           rate_mt: int, refill_in_us: int = -1) -> int:
    """Apply one Keepa envelope (a 429's included); ``lid`` is the call's lease, if it had one.

    ``refill_in_us`` (gate time; -1: unknown) places a stepped bucket's next refill."""
    refill(s, now)
    expire(s, now)
    lease = s["leases"].pop(lid, None) if lid is not None else None
    if timestamp_ms >= s["newest"]:
        s["newest"] = timestamp_ms
        in_flight = sum(v[1] for v in s["leases"].values())
        s["bal"], s["rem"], s["at"] = tokens_left_mt - in_flight, 0, now
        if rate_mt > 0 and rate_mt != s["rate"]:
            s["rate"] = rate_mt
        if s["step"] and refill_in_us >= 0:
            s["phase"] = (now + refill_in_us) % MINUTE_US
    elif lease is not None:
        s["bal"] += lease[1] - consumed_mt
    return s["bal"]


def release(s: dict, now: int, lid: str) -> int:
    """End a lease whose call got no envelope (its debit stays: Keepa may have charged it)."""
    refill(s, now)
    s["leases"].pop(lid, None)
    return s["bal"]


def withdraw(s: dict, now: int, wid: str) -> None:
    """Leave the queue (a waiter that gives up)."""
    s["waiters"].pop(wid, None)
