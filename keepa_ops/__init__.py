"""keepa-ops: keep a Keepa deal feed fresh while a backfill spends every spare token.

The top-level API::

    import keepa_ops
    cfg = keepa_ops.load_config("data/seed_incident.yaml")
    result = keepa_ops.simulate(cfg, hours=24)
    result.summary()["starved"]       # ['update_recent_deals']
"""
from .bucket import TokenBucket
from .clock import RealClock, VirtualClock
from .config import Config, load_config, parse_config
from .engine import Engine
from .errors import (ConfigError, KeepaError, KeepaOpsError, KeepaRequestRejected, KeepaUnavailable,
                     LogParseError, NotEnoughTokens)
from .events import EventLog
from .simulate import SimResult, simulate

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "Engine", "EventLog", "KeepaError", "KeepaOpsError", "KeepaRequestRejected",
    "KeepaUnavailable", "LogParseError", "NotEnoughTokens", "RealClock", "SimResult", "TokenBucket",
    "VirtualClock", "load_config", "parse_config", "simulate",
]
