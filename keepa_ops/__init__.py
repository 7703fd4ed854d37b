"""keepa-ops: keep a Keepa deal feed fresh while a backfill spends every spare token.

The top-level API::

    import keepa_ops
    r = keepa_ops.simulate("data/seed_incident.yaml", hours=24)
    r.summary()["starved"]                                  # ['update_recent_deals']

    parsed = keepa_ops.parse_logs("data/sample_logs")       # production logs -> token events
    keepa_ops.diagnose(parsed).verdict                       # 'starvation'

    table = keepa_ops.sweep("data/seed_incident.yaml", "data/seed_grid.yaml")
    keepa_ops.run_live("data/fixed_schedule.yaml", "deals.sqlite", duration=3600, speed=60)
"""
from .bucket import TokenBucket
from .clock import RealClock, VirtualClock
from .config import Config, load_config, parse_config
from .diagnosis import Diagnosis, diagnose
from .engine import Engine
from .errors import (ConfigError, KeepaError, KeepaOpsError, KeepaRequestRejected, KeepaUnavailable,
                     LogParseError, NotEnoughTokens)
from .events import EventLog
from .logparse import ParsedLog, parse_logs
from .diagnosis.demand import rebuild_config
from .replay import replay
from .runner import run_live
from .simulate import SimResult, simulate
from .sweep import recommend, sweep


def run_pipeline(*args, **kwargs):
    """Run the notebooks 01 -> 04 (needs the ``notebooks`` extra); see ``keepa_ops.pipeline``."""
    from .pipeline import run_pipeline as _run

    return _run(*args, **kwargs)


__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "Diagnosis", "Engine", "EventLog", "KeepaError", "KeepaOpsError",
    "KeepaRequestRejected", "KeepaUnavailable", "LogParseError", "NotEnoughTokens", "ParsedLog", "RealClock",
    "SimResult", "TokenBucket", "VirtualClock", "diagnose", "load_config", "parse_config", "parse_logs",
    "rebuild_config", "recommend", "replay", "run_live", "run_pipeline", "simulate", "sweep",
]
