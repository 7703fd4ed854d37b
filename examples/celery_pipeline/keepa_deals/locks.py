"""One run of each task at a time, under a Redis lock; a retry of the run that holds it re-enters."""
import logging
import math
import os
from contextlib import contextmanager

import redis
from celery.exceptions import Retry

from . import clock, keepa_api

log = logging.getLogger(__name__)
_redis = None


def client():
    """This process's Redis (the TokenManager's estimate and the locks live there)."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["KEEPA_DEALS_REDIS"])
    return _redis


@contextmanager
def one_run(task, name: str, keepa_seconds: float = 4 * 3600):
    """Yields True if this run holds ``name``'s lock, False if another run does (this one skips).

    The lock outlives a retry (the retry is this run, coming back); a 429 becomes a retry a
    minute later. Otherwise the lock is given back when the run ends."""
    owner = task.request.id or "direct"
    key = f"keepa_deals:lock:{name}"
    r = client()
    if not (r.set(key, owner, nx=True, px=max(1, int(clock.real(keepa_seconds) * 1000))) or r.get(key) == owner.encode()):
        log.info("--- Task: %s is already running. Skipping execution. ---", name)
        yield False
        return
    keep = False
    try:
        yield True
    except Retry:
        keep = True
        raise
    except keepa_api.TokensExhausted:
        keep = True
        raise task.retry(countdown=clock.real(60), max_retries=math.inf) from None
    finally:
        if not keep and r.get(key) == owner.encode():
            r.delete(key)
