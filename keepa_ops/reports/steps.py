"""The work of each notebook step, so that a notebook is its parameters, one call and figures.

Each function reads its inputs (``None``: what keepa-ops ships), writes its files into
``out`` and returns what the notebook draws. The pipeline passes every path absolute.

Invariants: a step writes only into ``out``; 02 writes ``rebuilt_config.yaml`` whenever it
has a verdict to sweep from (the demand as logged when nothing needs fixing), and stops the
pipeline with one line on ``insufficient_evidence``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import KeepaOpsError
from . import bundled


def parse_step(logs, out: Path):
    """01: the logs (None: the sample logs) -> ``events.parquet`` and ``read.json``."""
    from ..logs.parser import parse_logs

    parsed = parse_logs(logs or [str(bundled.data("sample_logs"))])
    parsed.events.to_parquet(out / "events.parquet", index=False)
    (out / "read.json").write_text(json.dumps(parsed.stats, indent=1))
    return parsed


def diagnose_step(events, logs, bound: str, out: Path):
    """02: events.parquet (or the logs) -> ``diagnosis.json`` and ``rebuilt_config.yaml``."""
    import pandas as pd
    import yaml

    from ..core.schedule import parse_duration
    from ..diagnosis import diagnose
    from ..diagnosis.demand import rebuild_config
    from ..logs.parser import parse_logs

    ev = pd.read_parquet(events) if events else parse_logs(logs or [str(bundled.data("sample_logs"))]).events
    d = diagnose(ev, bound_s=parse_duration(bound))
    (out / "diagnosis.json").write_text(json.dumps(d.to_dict(), indent=1, default=str))
    if d.verdict == "insufficient_evidence":  # nothing to sweep or run: stop here and say why
        raise KeepaOpsError(f"insufficient evidence: {d.evidence[0]}")
    rebuilt = d.recommendation.get("rebuilt") or rebuild_config(ev)[0].to_dict()  # healthy: the demand as logged
    (out / "rebuilt_config.yaml").write_text(yaml.safe_dump(rebuilt, sort_keys=False))
    return d


def sweep_step(base_config, grid, hours: float, workers, out: Path):
    """03: a grid around the base config -> ``sweep.parquet``, ``fixed_schedule.yaml``, ``recommendation.json``."""
    from ..planning.sweep import choose_config, sweep, write_fixed_schedule

    base = str(base_config or bundled.data("seed_incident.yaml"))
    df = sweep(base, str(grid or bundled.data("pipeline_grid.yaml")), hours=hours, workers=workers, progress=None)
    df.to_parquet(out / "sweep.parquet", index=False)
    rec = choose_config(df, base)
    write_fixed_schedule(rec, out / "fixed_schedule.yaml")
    (out / "recommendation.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "config"},
                                                        indent=1, default=str))
    return df, rec


def run_step(config, duration: str, speed: float, keepa_url, out: Path):
    """04: the fixed schedule, live, for ``duration`` -> ``deals.sqlite``, ``events.jsonl``, ``run.json``.

    Without ``keepa_url`` it runs against the embedded fake, whatever key the environment holds."""
    from ..core.schedule import parse_duration
    from ..live.runner import run_live

    db, events_path = out / "deals.sqlite", out / "events.jsonl"
    for stale in (db, events_path):
        stale.unlink(missing_ok=True)
    result = run_live(str(config or bundled.data("fixed_schedule.yaml")), db, keepa_url=keepa_url,
                      duration=parse_duration(duration), speed=speed, events_path=events_path,
                      progress=None, install_signals=False, fake_unless_url=True)  # the heartbeat is the CLI's
    (out / "run.json").write_text(json.dumps(result.summary(), indent=1, default=str))
    return result


def incident_events(path):
    """The incident's events for the before/after figure: 01's events.parquet, else the sample logs'."""
    import pandas as pd

    from ..logs.parser import parse_logs

    return pd.read_parquet(path) if path else parse_logs([str(bundled.data("sample_logs"))]).events


def run_events(out: Path):
    """The run's own event log, read back by the same parser as a production log."""
    from ..logs.parser import parse_logs

    return parse_logs([str(out / "events.jsonl")]).events
