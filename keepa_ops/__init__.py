"""keepa-ops: keep a Keepa deal feed fresh while a backfill spends every spare token.

The top-level API::

    import keepa_ops
    r = keepa_ops.simulate("data/seed_incident.yaml", hours=24)
    r.summary()["starved"]                                  # ['update_recent_deals']

    parsed = keepa_ops.parse_logs("data/sample_logs")       # production logs -> token events
    keepa_ops.diagnose(parsed).verdict                       # 'starvation'

    table = keepa_ops.sweep("data/seed_incident.yaml", "data/seed_grid.yaml")
    keepa_ops.run_live("data/fixed_schedule.yaml", "deals.sqlite", duration=3600, speed=60)

The layout, one concern per subpackage (each one's docstring says what it owns and what
it may import; ``lint-imports`` checks the layers in ``make test``), top to bottom:
``reports`` (figures, the notebook pipeline), ``planning`` (sweeps), ``logs`` (reading
production logs), ``diagnosis`` (verdicts and replays), ``live`` and ``simulation`` (the
engine's two clocks and transports), ``config``, ``core`` (the engine), ``keepa`` (Keepa's
rules: bucket, meter, deal stream, wire, client), ``errors``.

Names are re-exported lazily (PEP 562): ``import keepa_ops`` imports neither pandas nor
the engine until a name is used, so ``keepa-ops --help`` and ``keepa-ops run`` stay light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "Config": "config", "load_config": "config", "parse_config": "config",
    "ConfigError": "errors", "KeepaError": "errors", "KeepaOpsError": "errors",
    "KeepaRequestRejected": "errors", "KeepaUnavailable": "errors", "LogParseError": "errors",
    "NotEnoughTokens": "errors",
    "TokenBucket": "keepa.bucket",
    "RealClock": "core.clock", "VirtualClock": "core.clock",
    "Engine": "core.engine", "EventLog": "core.events",
    "SimResult": "simulation.simulate", "simulate": "simulation.simulate",
    "run_live": "live.runner",
    "Gate": "gate", "Permit": "gate", "GateUnavailable": "gate",
    "ParsedLog": "logs.parser", "parse_logs": "logs.parser",
    "Diagnosis": "diagnosis", "diagnose": "diagnosis",
    "rebuild_config": "diagnosis.demand", "replay": "diagnosis.replay",
    "sweep": "planning.sweep", "choose_config": "planning.sweep",
    "run_pipeline": "reports.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keepa_ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
