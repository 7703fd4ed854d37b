"""The tasks' Redis locks: one run of each task at a time; a retry of the run holding it re-enters."""
import os

import redis

from . import clock

_redis = None


def _r():
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["KEEPA_DEALS_REDIS"])
    return _redis


def take(name: str, owner: str, keepa_seconds: float = 4 * 3600) -> bool:
    key = f"keepa_deals:lock:{name}"
    ttl_ms = max(1, int(clock.real(keepa_seconds) * 1000))
    if _r().set(key, owner, nx=True, px=ttl_ms):
        return True
    return _r().get(key) == owner.encode()


def give_back(name: str, owner: str) -> None:
    key = f"keepa_deals:lock:{name}"
    if _r().get(key) == owner.encode():
        _r().delete(key)
