"""What-if replay: rebuild the demand a log shows, then re-run it under another config.

``rebuild_config`` reads from the events: the refill rate and starting balance; per
task its role, schedule, target, spend per call, batch size and threshold; the
pending and arriving live deals. What the log cannot show is filled by a stated
rule and listed among the returned assumptions (e.g. the spend of a task that never spent).

Invariant: the rebuilt config is valid even when the logged one was not: an
unreachable target is kept (``strict=False``) so the incident can be re-enacted.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .config import Config, parse_config
from .diagnose import observed_refill_rate
from .errors import ConfigError, KeepaOpsError
from .simulate import simulate


def _median(s):
    s = s.dropna()
    return float(s.median()) if len(s) else None


def rebuild_config(events: pd.DataFrame, policy: str = "threshold") -> tuple[Config, list[str]]:
    """A Config whose simulation reproduces the demand in ``events``, and the guesses it took."""
    events = events.sort_values("time", kind="stable")
    assumptions = []
    rate = observed_refill_rate(events) or 5.0
    cap = 60 * rate
    bal = events["tokens_left"].where(events["tokens_left"].notna(), events["balance"]).dropna()
    start_tokens = float(min(cap, bal.iloc[0])) if len(bal) else cap
    t0 = events["time"].min()
    hours = max((events["time"].max() - t0).total_seconds() / 3600, 1e-9)
    tasks, known = {}, {}
    names = sorted(set(events.loc[events["event"].isin(["wait", "heartbeat", "spend", "abort", "grant"]),
                                  "task"].dropna()))
    for name in names:
        e = events[events["task"] == name]
        role = "backfiller" if ("backfill" in name or e["event"].isin(["checkpoint", "resume"]).any()) else "upserter"
        target = e.loc[e["event"].isin(["wait", "heartbeat", "abort"]), "target"].dropna()
        target = float(target.mode().iloc[0]) if len(target) else None
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
    found = events[events["event"] == "found"].dropna(subset=["items"])
    pending = int(found["items"].iloc[0]) if len(found) else 0
    later = float(found["items"].iloc[1:].sum()) if len(found) > 1 else 0.0
    if not len(found):
        assumptions.append("the log shows no 'Found N new deals': no live arrivals are replayed.")
    elif len(found) == 1:
        assumptions.append(f"the log shows one Upserter run (found {pending} deals) and no later one, so no "
                           f"later arrivals are replayed.")
    raw = {"refill_per_minute": rate, "start_tokens": start_tokens, "refill": "continuous", "policy": policy,
           "start": t0.isoformat() + "Z" if pd.notna(t0) else "2026-02-04T00:00:00Z", "tasks": tasks,
           "workload": {"pending_new_deals": pending, "new_deals_per_hour": later / hours, "backlog": 100000}}
    return parse_config(raw, strict=False), assumptions


DEMAND_KEYS = ("refill_per_minute", "start_tokens", "capacity", "start", "workload")


def _as_mapping(alternative) -> dict:
    if isinstance(alternative, dict):
        return alternative
    if hasattr(alternative, "raw"):
        return alternative.raw
    text = Path(alternative).read_text() if Path(str(alternative)).exists() else str(alternative)
    data = yaml.safe_load(text)
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
    """Re-run the logged demand under ``alternative``: a YAML path, a mapping or a Config.

    The log decides the demand (refill, start balance, workload); the alternative decides
    the rest (policy, bound, any task setting it names).
    """
    events = parsed.events if hasattr(parsed, "events") else parsed
    base, assumptions = rebuild_config(events)
    if hours is None:
        hours = max(24.0, (events["time"].max() - events["time"].min()).total_seconds() / 3600)
    alt = parse_config(_merge(base.to_dict(), _as_mapping(alternative)))
    from .diagnose import diagnose

    happened = diagnose(events, check=False)
    return {
        "hours": hours,
        "assumptions": assumptions,
        "rebuilt": base.to_dict(),
        "alternative": alt.to_dict(),
        "logged": {"verdict": happened.verdict, "starved": happened.starved, "tasks": happened.tasks},
        "as_logged_simulated": simulate(base, hours).brief(),
        "replayed": simulate(alt, hours).brief(),
    }
