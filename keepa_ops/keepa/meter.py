"""Keepa's meter: its price list, its admission rule and its envelope, for one key.

The simulated Keepa and the embedded fake server both meter through this class, so a
call costs the same and is refused at the same balance in simulation and live. The
engine never tells Keepa what a call costs: Keepa prices it here, and the engine learns
the charge and the balance from the envelope, exactly as in production.

Invariants:
* a token-costing call is admitted while the balance is > 0 and then debited its full
  price, even below zero; at <= 0 it is refused (a 429) and charged nothing;
* the bucket refills at ``refill_rate - token_flow_reduction`` per minute (tracking
  products lowers Keepa's refill) and saturates at 60 x the plan's rate;
* an envelope reports ``tokensLeft`` as an integer (the floor), like Keepa.

The price list (``keepa-api.md``): a /deal page costs 5; a product costs 1, or with
``offers=N`` 6 per 10 offers found (up to N) instead, +2 for ``buybox=1``, +2 for
``stock=1``, +1 for ``update=0``; a seller costs 1; /token is free.
"""
from __future__ import annotations

import math

from .bucket import TokenBucket
from .wire import Envelope

DEAL_PAGE_COST = 5
SELLER_COST = 1


def _flag(params: dict, name: str, value: str) -> bool:
    v = params.get(name)
    return v is not None and str(int(v) if isinstance(v, bool) else v) == value


def product_cost(params: dict, offers_found: int) -> int:
    """Keepa's price for one product fetched with ``params`` (query values as str or int)."""
    cost = 1
    if params.get("offers") is not None:
        cost = max(1, 6 * math.ceil(min(int(params["offers"]), offers_found) / 10))
    if _flag(params, "buybox", "1"):
        cost += 2
    if _flag(params, "stock", "1"):
        cost += 2
    if _flag(params, "update", "0"):
        cost += 1
    return cost


REPLAY_OFFERS = 100  # offers per product in a replayed world: every offers=N up to 100 is priced in full


def params_for_cost(cost: float) -> dict:
    """/product parameters at which Keepa charges about ``cost`` for a product with 100 offers.

    For replaying a log that shows what each product cost but not how it was fetched:
    1 base (+2 buybox, +2 stock, +1 update=0) prices 1-6; ``offers=N`` prices 6 per 10
    offers (N >= 20), so 12-65 exactly; 7-11 round to 6 or 12.
    """
    c = min(65, max(1, round(cost)))
    if 6 < c < 12:
        c = 6 if c < 9 else 12
    pages, rest = divmod(c, 6) if c >= 12 else (0, c - 1)
    params: dict = {"offers": 10 * pages} if pages else {}
    for name, value, price in (("buybox", 1, 2), ("stock", 1, 2), ("update", 0, 1)):
        if rest >= price:
            params[name] = value
            rest -= price
    return params


class KeepaMeter:
    """One key's token bucket at Keepa, on Keepa's clock (seconds since the meter's start)."""

    __slots__ = ("bucket", "charged", "refused")

    def __init__(self, refill_per_minute: float, start_tokens: float, *, capacity: float | None = None,
                 stepped: bool = False, now: float = 0.0, token_flow_reduction: float = 0.0):
        self.bucket = TokenBucket(refill_per_minute, start_tokens, stepped=stepped, now=now, capacity=capacity)
        self.charged = 0.0
        self.refused = 0
        if token_flow_reduction:
            self.set_rate(refill_per_minute, token_flow_reduction, now)

    @property
    def plan_rate(self) -> float:
        return self.bucket.rate + self.bucket.reduction

    @property
    def token_flow_reduction(self) -> float:
        return self.bucket.reduction

    def set_rate(self, refill_per_minute: float, token_flow_reduction: float, now: float) -> None:
        """A new plan rate or tracking load, from ``now`` on."""
        b = self.bucket
        b.sync(b.balance(now), now, refill_per_minute, None, token_flow_reduction)

    def balance(self, now: float) -> float:
        return self.bucket.balance(now)

    def admits(self, now: float) -> bool:
        """Whether a token-costing call is served now (balance > 0); counts a refusal if not."""
        if self.bucket.balance(now) > 0:
            return True
        self.refused += 1
        return False

    def charge(self, cost: float, now: float) -> None:
        self.bucket.spend(cost, now)
        self.charged += cost

    def refill_in(self, now: float) -> float:
        """Seconds until the next refill step (Keepa reports one per minute)."""
        b = self.bucket
        if b.stepped:
            return ((b.phase - now) % 60.0) or 60.0
        return 60.0 - (now % 60.0)

    def envelope(self, now: float, consumed: float, timestamp_ms: float, time_scale: float = 1.0) -> Envelope:
        """What Keepa reports after a call; ``time_scale`` converts ``refillIn`` to the caller's clock."""
        return Envelope(tokens_left=float(math.floor(self.bucket.balance(now))),
                        refill_in_ms=float(int(self.refill_in(now) * 1000 / time_scale)),
                        refill_rate=self.plan_rate, consumed=float(consumed),
                        timestamp_ms=float(int(timestamp_ms)), token_flow_reduction=self.token_flow_reduction)
