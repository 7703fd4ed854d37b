"""Incident shapes with known ground truth, for round-trip tests and sample data.

Each is a config the simulator runs; ``make_incident_log`` writes its events as a
legacy Celery worker log. The expected verdict is the simulator's truth, stated here.
"""
from __future__ import annotations

import copy

from .config import parse_config
from .legacy_log import write_legacy_log
from .simulate import simulate

_UP = {"role": "upserter", "every": "60s", "batch_size": 10, "cost_per_item": 20, "page_cost": 0,
       "threshold": 50, "priority": 1}
_BF = {"role": "backfiller", "every": "continuous", "batch_size": 5, "cost_per_item": 20, "page_cost": 0,
       "threshold": 80, "priority": 2}
SEED = {"refill_per_minute": 5, "start_tokens": 24, "refill": "continuous", "policy": "threshold",
        "tasks": {"update_recent_deals": _UP, "backfill_deals": _BF},
        "workload": {"pending_new_deals": 300, "new_deals_per_hour": 6, "backlog": 10000}}


def _seed(policy=None, up=None, bf=None, **top):
    raw = copy.deepcopy(SEED)
    raw["tasks"]["update_recent_deals"].update(up or {})
    raw["tasks"]["backfill_deals"].update(bf or {})
    if policy:
        raw["policy"] = policy
    raw.update(top)
    return raw


# name -> (config, hours, verdict, starved, culprit)
INCIDENTS = {
    "seed_before_fix": (_seed(), 24, "starvation", ["update_recent_deals"], "backfill_deals"),
    "seed_after_fix": (_seed(up={"batch_size": 5}), 24, "starvation", ["backfill_deals"], "update_recent_deals"),
    "target_above_capacity": (_seed(up={"batch_size": 15}), 12, "unreachable_target", ["update_recent_deals"], None),
    "every_minute_upserter": (_seed(up={"batch_size": 5, "page_cost": 5}, bf={"page_cost": 5},
                                    workload={"pending_new_deals": 0, "new_deals_per_hour": 6, "backlog": 10000}),
                              24, "starvation", ["backfill_deals"], "update_recent_deals"),
    "deficit_spiral": (_seed(policy="greedy", bf={"batch_size": 10}), 24, "deficit_spiral", None, None),
    "livelock": (_seed(up={"max_wait": "60s"}), 12, "livelock", ["update_recent_deals"], "backfill_deals"),
    "healthy_priority": (_seed(policy="priority"), 48, "healthy", [], None),
}


def make_incident_log(name: str, path, **kw):
    """Simulate incident ``name`` and write it as a legacy log; return the SimResult."""
    raw, hours = INCIDENTS[name][0], INCIDENTS[name][1]
    result = simulate(parse_config(raw, strict=False), hours)
    write_legacy_log(result, path, **kw)
    return result
