"""What-if replay: the demand a log shows, re-run under another config, beside what happened.

The log decides the demand (``diagnosis.demand.rebuild_config``: refill, start balance,
tasks, workload); the alternative decides the rest (policy, bound, any task setting it
names). Both are simulated over the same hours.
"""
from __future__ import annotations

from ..config import parse_config, read_yaml
from . import diagnose
from .demand import rebuild_config
from .evidence import gather
from ..errors import ConfigError
from ..simulation.simulate import simulate

DEMAND_KEYS = ("refill_per_minute", "start_tokens", "capacity", "start", "workload")


def _as_mapping(alternative) -> dict:
    if isinstance(alternative, dict):
        return alternative
    if hasattr(alternative, "raw"):
        return alternative.raw
    data = read_yaml(alternative)
    if not isinstance(data, dict):
        raise ConfigError("config", "a replay config must be a mapping, e.g. `policy: priority`.")
    return data


def _merge(base: dict, change: dict) -> dict:
    """The demand stays the log's; everything else the change names replaces the rebuilt value.

    Dotted keys (``tasks.x.batch_size``) and nested mappings both work.
    """
    out = dict(base)
    for key, value in change.items():
        if key in DEMAND_KEYS:
            continue
        if "." in key:
            head, rest = key.split(".", 1)
            out[head] = _merge(out.get(head) or {}, {rest: value})
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def replay(parsed, alternative, hours: float | None = None) -> dict:
    """Re-run the logged demand under ``alternative``: a YAML path, a mapping or a Config."""
    events = parsed.events if hasattr(parsed, "events") else parsed
    evidence = gather(events)
    base, assumptions = rebuild_config(evidence)
    if hours is None:
        hours = max(24.0, (evidence.end - evidence.start).total_seconds() / 3600)
    alt = parse_config(_merge(base.to_dict(), _as_mapping(alternative)))
    happened = diagnose(evidence, check=False)
    return {
        "hours": hours,
        "assumptions": assumptions,
        "rebuilt": base.to_dict(),
        "alternative": alt.to_dict(),
        "logged": {"verdict": happened.verdict, "starved": happened.starved, "tasks": happened.tasks},
        "as_logged_simulated": simulate(base, hours).brief(),
        "replayed": simulate(alt, hours).brief(),
    }
