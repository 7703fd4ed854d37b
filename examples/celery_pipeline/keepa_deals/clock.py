"""The demo's clock: the fake Keepa runs SPEED times faster than the wall, and so does the pipeline.

Every duration the pipeline reasons about (a Beat period, a token wait, a lock's expiry) is in
Keepa seconds; it sleeps SPEED times less. The log's timestamps are Keepa's time too, so the
worker's log reads as a production log of SPEED times the run's length (``install_log_clock``).
At SPEED 1 this module changes nothing.
"""
import logging
import os
import time

SPEED = float(os.environ.get("KEEPA_DEALS_SPEED", "1"))
_real0, _keepa0 = (float(x) for x in os.environ.get("KEEPA_DEALS_EPOCH", f"{time.time()},{time.time()}").split(","))


def now() -> float:
    """Keepa's time, unix seconds."""
    return _keepa0 + (time.time() - _real0) * SPEED


def real(keepa_seconds: float) -> float:
    return keepa_seconds / SPEED


def sleep(keepa_seconds: float) -> None:
    time.sleep(max(0.0, keepa_seconds) / SPEED)


def install_log_clock() -> None:
    """Stamp log records with Keepa's time (every process that imports the app, forks included)."""
    if SPEED == 1:
        return
    make = logging.getLogRecordFactory()

    def record(*args, **kwargs):
        r = make(*args, **kwargs)
        t = _keepa0 + (r.created - _real0) * SPEED
        r.created, r.msecs = t, int((t - int(t)) * 1000) + 0.0
        return r

    logging.setLogRecordFactory(record)
