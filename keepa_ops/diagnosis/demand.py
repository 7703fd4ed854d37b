"""The demand a log shows, rebuilt as a keepa-ops config the simulator can re-enact.

``rebuild_config`` reads from the diagnosis' evidence: the refill rate and starting
balance; per task its role, schedule, target, spend per call, batch size and threshold;
the pending and arriving live deals. What the log cannot show is filled by a stated rule
and listed among the returned assumptions (e.g. the spend of a task that never spent).

Invariant: the rebuilt config is valid even when the logged one was not: an
unreachable target is kept (``strict=False``) so the incident can be re-enacted.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..config import Config, parse_config
from ..keepa.meter import REPLAY_OFFERS, params_for_cost, product_cost
from ..errors import KeepaOpsError
from .evidence import Evidence, gather
from .readings import observed_balance, waited_target


def _median(s):
    s = s.dropna()
    return float(s.median()) if len(s) else None


def rebuild_config(events, policy: str = "threshold") -> tuple[Config, list[str]]:
    """A Config whose simulation reproduces the demand in ``events`` (parsed events or their
    ``Evidence``), and the guesses it took."""
    evidence = events if isinstance(events, Evidence) else gather(events)
    events = evidence.events
    assumptions = []
    rate = evidence.rate
    if rate is None:
        rate = 5.0
        assumptions.append("the log shows no refill rate: the basic plan's 5 tokens/min is assumed.")
    cap = 60 * rate
    bal = observed_balance(events).dropna()
    start_tokens = float(min(cap, bal.iloc[0])) if len(bal) else cap
    t0 = events["time"].min()
    hours = max((events["time"].max() - t0).total_seconds() / 3600, 1e-9)
    tasks, known = {}, {}
    names = sorted(set(events.loc[events["event"].isin(["wait", "heartbeat", "spend", "abort", "grant"]),
                                  "task"].dropna()))
    for name in names:
        e = events[events["task"] == name]
        role = "backfiller" if ("backfill" in name or e["event"].isin(["checkpoint", "resume"]).any()) else "upserter"
        target = waited_target(e)
        spends = e[(e["event"] == "spend") & (e["consumed"] > 0)]
        batch_spends = spends[spends["consumed"] > 5] if (spends["consumed"] > 5).any() else spends
        cost = _median(batch_spends["consumed"])
        page_cost = 5.0 if ((spends["consumed"] == 5) & (spends["kind"] == "fetched")).any() else 0.0
        ck = e[e["event"] == "checkpoint"]["detail"].dropna()
        offsets = [json.loads(d).get("chunk") for d in ck.head(50)]
        steps = np.diff([o for o in offsets if o is not None])
        batch = int(np.median(steps[steps > 0])) if len(steps[steps > 0]) else None
        known[name] = dict(role=role, target=target, cost=cost, batch=batch, page_cost=page_cost)
    reserves = [k["target"] - k["cost"] for k in known.values() if k["target"] is not None and k["cost"] is not None]
    per_item = [k["cost"] / k["batch"] for k in known.values() if k["cost"] and k["batch"]]
    for name, k in known.items():
        target, cost, batch = k["target"], k["cost"], k["batch"]
        if cost is None:
            reserve = min(reserves) if reserves else 0.0
            cost = (target - reserve) if target is not None else 20.0
            assumptions.append(f"{name} never spent: its call cost is taken as {cost:g} "
                               f"(target {target if target is not None else '?'} less the smallest reserve seen, "
                               f"{reserve:g}).")
        threshold = max(0.0, (target - cost)) if target is not None else 0.0
        if batch is None:
            cpi = float(np.median(per_item)) if per_item else cost
            batch = max(1, int(round(cost / cpi)))
            if per_item:
                assumptions.append(f"{name}'s batch size is taken as {batch} ({cost:g} tokens at the "
                                   f"{cpi:g} tokens per item seen elsewhere).")
        every = "continuous"
        if k["role"] == "upserter":
            ticks = events[((events["event"] == "skip") | (events["event"] == "run_start")) & (events["task"] == name)]
            gaps = ticks["time"].diff().dt.total_seconds()
            gaps = gaps[gaps > 0]
            every = f"{float(gaps.median()):g}s" if len(gaps) else "60s"
        tasks[name] = {"role": k["role"], "every": every, "batch_size": int(batch),
                       "cost_per_item": float(cost) / int(batch), "page_cost": k["page_cost"],
                       "threshold": float(threshold), "priority": 1 if k["role"] == "upserter" else 2}
    if not tasks:
        raise KeepaOpsError("the log shows no task waiting or spending tokens, so there is no demand to replay. "
                            "Fix: include the worker's log (Celery's default format names the process).")
    # keepa-ops runs one task of each role; a log of two eras (an Upserter, later an Ingestor) keeps
    # the busiest of each role, and says so
    spent = evidence.spends.groupby("task")["consumed"].sum().to_dict() if len(evidence.spends) else {}
    for role in ("upserter", "backfiller"):
        same = sorted((n for n, t in tasks.items() if t["role"] == role), key=lambda n: -spent.get(n, 0.0))
        for n in same[1:]:
            del tasks[n]
            assumptions.append(f"{n} is left out of the replay: keepa-ops runs one {role}, and {same[0]} "
                               f"spent more.")
    found = events[events["event"] == "found"].dropna(subset=["items"])
    pending = int(found["items"].iloc[0]) if len(found) else 0
    later = float(found["items"].iloc[1:].sum()) if len(found) > 1 else 0.0
    if not len(found):
        assumptions.append("the log shows no 'Found N new deals': no live arrivals are replayed.")
    elif len(found) == 1:
        assumptions.append(f"the log shows one Upserter run (found {pending} deals) and no later one, so no "
                           f"later arrivals are replayed.")
    # Keepa prices a product by how it is fetched; the log shows the price, not the parameters:
    # choose parameters and an offers count at which Keepa charges what the log shows
    # each task fetches with parameters at which Keepa charges the price the log shows
    for name, t in tasks.items():
        t["product_params"] = params_for_cost(t["cost_per_item"])
        charged = product_cost(t["product_params"], REPLAY_OFFERS)
        if charged != t["cost_per_item"]:
            assumptions.append(f"{name}'s products are replayed at Keepa's nearest price, {charged} tokens "
                               f"(the log shows {t['cost_per_item']:g} a product).")
    raw = {"refill_per_minute": rate, "start_tokens": start_tokens, "refill": "continuous", "policy": policy,
           "start": t0.isoformat() + "Z" if pd.notna(t0) else "2026-02-04T00:00:00Z", "tasks": tasks,
           "workload": {"pending_new_deals": pending, "new_deals_per_hour": later / hours, "backlog": 100000,
                        "offers_per_product": REPLAY_OFFERS}}
    return parse_config(raw, strict=False), assumptions
