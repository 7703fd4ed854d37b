"""The legacy TokenManager of 2026-02-04 (``keepa_deals.token_manager``), as the seed describes it.

One balance estimate shared in Redis by every worker process. A task asks permission for a
call of ``cost`` with its ``threshold``; below ``cost + threshold`` it sleeps for the time the
refill needs, wakes, re-checks and waits again. Whoever's target the refill reaches first wins:
with the Backfiller at 100 + 80 = 180 and the Upserter at 200 + 50 = 250, the Backfiller wins
every time and the Upserter starves. (The code waited for target + 5, as production's did.)

Kept as it was, races included: this is the system being diagnosed, not a model of a good one.
"""
import logging

from . import clock, keepa_api
from .locks import client as _r

log = logging.getLogger(__name__)
REFILL_PER_MINUTE = 5.0
CAPACITY = 300.0
_KEY = "keepa_deals:tokens"


def _estimate() -> float:
    raw = _r().hmget(_KEY, "tokens", "at")
    if raw[0] is None:
        body = keepa_api.token_status()
        sync_tokens(body["tokensLeft"])
        return float(body["tokensLeft"])
    tokens, at = float(raw[0]), float(raw[1])
    return min(CAPACITY, tokens + (clock.now() - at) * REFILL_PER_MINUTE / 60.0)


def _store(tokens: float) -> None:
    _r().hset(_KEY, mapping={"tokens": tokens, "at": clock.now()})


def request_permission_for_call(estimated_cost: float, threshold: float) -> None:
    """Return when the shared estimate reaches ``estimated_cost + threshold``; reserve the cost."""
    target = estimated_cost + threshold
    while True:
        tokens = _estimate()
        if tokens >= target:
            _store(tokens - estimated_cost)
            return
        wait = int((target + 5 - tokens) / REFILL_PER_MINUTE * 60)
        log.warning("Insufficient tokens (Current: %.2f, Target: %s). Waiting for %ss.", tokens, int(target), wait)
        clock.sleep(wait)


def sync_tokens(tokens_left: float) -> None:
    """Keepa's ``tokensLeft`` after a call is the truth: replace the estimate with it."""
    raw = _r().hget(_KEY, "tokens")
    if raw is not None:
        log.info("Token count authoritatively synced from API response. Previous estimate: %.2f, New value: %.2f",
                 _estimate(), float(tokens_left))
    _store(float(tokens_left))
