"""Incident shapes with known ground truth, for round-trip tests and sample data.

Each is a config the simulator runs; ``make_incident_log`` writes its events as a
legacy Celery worker log. The expected verdict is the simulator's truth, stated here.
"""
from __future__ import annotations

import copy
import gzip
import random
from pathlib import Path

from ..config import parse_config
from .legacy_writer import write_legacy_log
from ..simulation.simulate import simulate

_UP = {"role": "upserter", "every": "60s", "batch_size": 10, "cost_per_item": 20, "page_cost": 0,
       "threshold": 50, "priority": 1}
_BF = {"role": "backfiller", "every": "continuous", "batch_size": 5, "cost_per_item": 20, "page_cost": 0,
       "threshold": 80, "priority": 2}
SEED = {"refill_per_minute": 5, "start_tokens": 24, "refill": "continuous", "policy": "threshold",
        "tasks": {"update_recent_deals": _UP, "backfill_deals": _BF},
        "workload": {"pending_new_deals": 300, "new_deals_per_hour": 6, "backlog": 10000, "offers_per_product": 30},
        "keepa": {"product_params": {"offers": 30, "buybox": 1}}}  # 20 tokens a product, as in the incident


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
                                    workload={"pending_new_deals": 0, "new_deals_per_hour": 6, "backlog": 10000,
                                              "offers_per_product": 30}),
                              24, "starvation", ["backfill_deals"], "update_recent_deals"),
    "deficit_spiral": (_seed(policy="greedy", bf={"batch_size": 10}), 24, "deficit_spiral", None, None),
    # the Upserter pays Keepa for its deal-list peek every minute, then gives up its batch after
    # 60 s: the peeks take the whole refill and nothing is ever committed, a livelock (a task that
    # starves itself, see diagnosis.verdicts)
    "exit_after_60s": (_seed(up={"max_wait": "60s"}), 12, "livelock", None, None),
    "healthy_priority": (_seed(policy="priority", up={"page_cost": 5}, bf={"page_cost": 5}), 48, "healthy", [], None),
}


def make_incident_log(name: str, path, **kw):
    """Simulate incident ``name`` and write it as a legacy log; return the SimResult."""
    raw, hours = INCIDENTS[name][0], INCIDENTS[name][1]
    result = simulate(parse_config(raw, strict=False), hours)
    write_legacy_log(result, path, **kw)
    return result


def write_sample_logs(directory, name: str = "seed_before_fix") -> list[Path]:
    """A realistic production log of an incident: a rotated, partly gzipped Celery worker log
    with the pipeline's everyday noise (HTTP lines, a traceback) among the token lines."""
    from .legacy_writer import LegacyLogWriter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw, hours = INCIDENTS[name][0], INCIDENTS[name][1]
    result = simulate(parse_config(raw, strict=False), hours)
    lines = LegacyLogWriter(result).lines()
    rng = random.Random(20260204)
    out = []
    for line in lines:
        out.append(line)
        if rng.random() < 0.15 and line.startswith("["):
            ts = line[1:24]
            out.append(f"[{ts}: INFO/MainProcess] HTTP Request: GET https://api.keepa.com/product?domain=1"
                       f"&asin=B0{rng.getrandbits(32):08X} \"HTTP/1.1 200 OK\"")
        if rng.random() < 0.002 and line.startswith("["):
            ts = line[1:24]
            out += [f"[{ts}: ERROR/MainProcess] Error in timer: ConnectionResetError(104, 'Connection reset by peer')",
                    "Traceback (most recent call last):",
                    '  File "/usr/lib/python3/dist-packages/kombu/asynchronous/hub.py", line 373, in create_loop',
                    "    cb(*cbargs)",
                    "ConnectionResetError: [Errno 104] Connection reset by peer"]
    cut = int(len(out) * 0.6)
    old, new = directory / "celery_worker.log.1.gz", directory / "celery_worker.log"
    with gzip.open(old, "wt") as f:
        f.write("\n".join(out[:cut]) + "\n")
    new.write_text("\n".join(out[cut:]) + "\n")
    return [old, new]
