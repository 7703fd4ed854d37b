"""Sweep a grid of configs in virtual time and recommend the fixed schedule.

A grid file maps dotted config keys to lists of values; the grid is their product::

    tasks.update_recent_deals.batch_size: [1, 2, 5, 10]
    tasks.@backfiller.batch_size: [5, 10]      # the config's backfiller, whatever its name
    policy: [threshold, priority]

Invariants:
* every grid point gets a row, in grid order; a point the config rules reject (an
  unreachable target, say) is a row with ``valid = False`` and the error, not a gap;
* rows depend only on (base, grid, hours): the same on one core or many.

Freshness is reported over all live deals (``fresh_*``, which includes the deals
pending at the start) and in steady state (``steady_*``: deals that arrived in the
second half of the horizon, after any initial catch-up).

The recommendation rule: among valid, starvation-free configs whose steady-state
p95 freshness is within ``freshness_target`` (default: the starvation bound), take
the one with the most backfill per day; ties go to the lower steady p95, then fewer
tokens wasted at the cap, then grid order. If none meets the freshness target, take
the starvation-free config with the lowest steady p95.
"""
from __future__ import annotations

import itertools
import math
import os
import sys
import multiprocessing as mp
import signal
from pathlib import Path

import pandas as pd
import yaml

from ..config import Config, load_config, parse_config, read_yaml
from ..keepa.wire import PAGE_SIZE
from ..errors import ConfigError, KeepaOpsError
from ..simulation.simulate import simulate


def load_grid(source) -> dict[str, list]:
    """A grid from a YAML path, a YAML string or a mapping; every value a non-empty list."""
    if isinstance(source, dict):
        grid = source
    else:
        grid = read_yaml(source, "grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("grid", "expected a mapping of dotted config keys to lists of values.",
                          "e.g. `tasks.update_recent_deals.batch_size: [1, 2, 5, 10]`.")
    out = {}
    for k, v in grid.items():
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ConfigError(f"grid.{k}", "has no values.", "give at least one value.")
        out[str(k)] = vals
    return out


def _points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


ROLES = ("upserter", "backfiller")


def resolve_roles(base: Config, grid: dict) -> tuple[dict, list[str]]:
    """``tasks.@upserter.batch_size`` names the base's upserter, whatever it is called, so one grid
    fits any demand rebuilt from a log. A role the base has no task for drops its keys, each
    with a note; a key that names a task spells out its name as before."""
    out, notes = {}, []
    for key, values in grid.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "tasks" and parts[1].startswith("@"):
            role = parts[1][1:]
            if role not in ROLES:
                raise ConfigError(f"grid.{key}", f"names the role {role!r}.", f"use one of "
                                  f"{', '.join('@' + r for r in ROLES)}.")
            task = base.task(role)
            if task is None:
                notes.append(f"grid.{key} left out: the config has no {role}")
                continue
            key = ".".join(["tasks", task.name] + parts[2:])
        out[key] = values
    return out, notes


def _check_keys(base: Config, grid: dict) -> None:
    """A grid key must name something a config can hold, and a task the config has (else every
    row would fail alike)."""
    names = set(base.tasks)
    for key in grid:
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "tasks" and parts[1] not in names:
            raise ConfigError(f"grid.{key}", f"names the task {parts[1]!r}, which the config does not have "
                              f"(its tasks: {', '.join(sorted(names))}).",
                              "spell it as one of those, or use tasks.@upserter / tasks.@backfiller.")
    for key in grid:
        try:
            base.with_overrides({key: grid[key][0]})
        except ConfigError as e:
            if "unknown key" in str(e):
                raise ConfigError(f"grid.{key}", f"is not a config key ({e.field}: {e.problem}).", e.fix) from None


def physical_bound(cfg: Config, hours: float) -> dict:
    """Deals/day the refill allows: all deals, and backfill deals left after live demand."""
    rate = cfg.refill_per_minute
    up, bf = cfg.task("upserter"), cfg.task("backfiller")
    available = min(cfg.start_tokens, cfg.capacity) + rate * 60 * hours
    live_tokens = 0.0
    if up is not None:
        w = cfg.workload
        n_live = w.pending_new_deals + (len(w.arrivals or ()) if w.arrivals is not None
                                        else w.new_deals_per_hour * hours)
        period = getattr(up.schedule, "period", 60.0)
        runs = hours * 3600 / period if up.page_cost else 0
        live_tokens = n_live * up.cost_per_item + runs * up.page_cost
    out = {"refill_per_day": rate * 1440, "live_tokens": live_tokens, "available_tokens": available}
    if bf is not None:
        per_deal = bf.cost_per_item + bf.page_cost / PAGE_SIZE
        out["all_deals_per_day"] = rate * 1440 / per_deal
        out["backfill_bound_per_day"] = max(0.0, available - live_tokens) / per_deal / (hours / 24)
    return out


def _quiet_worker() -> None:
    """A sweep worker leaves SIGINT to the parent, which ends every worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_point(args):
    i, raw, overrides, hours = args
    row = {"config_id": i, **{f"set:{k}": (v if not isinstance(v, (list, dict)) else str(v))
                              for k, v in overrides.items()}}
    try:
        cfg = parse_config(raw).with_overrides(overrides)
    except ConfigError as e:
        return {**row, "valid": False, "error": str(e)}
    result = simulate(cfg, hours)
    s = result.summary()
    f = s["freshness"]
    steady = result.freshness(since=hours * 3600 / 2)
    row.update({"valid": True, "error": None, "policy": cfg.policy,
                "fresh_p50_s": f["p50_s"], "fresh_p95_s": f["p95_s"], "fresh_max_s": f["max_s"],
                "steady_p50_s": steady["p50_s"], "steady_p95_s": steady["p95_s"],
                "live_unserved": f["unserved"], "backfill_per_day": s["backfill_per_day"] or 0.0,
                "tokens_wasted_at_cap": s["tokens_wasted_at_cap"], "tokens_spent": s["tokens_spent"],
                "starved": bool(s["starved"]), "starved_tasks": ",".join(s["starved"])})
    for name, t in s["tasks"].items():
        row[f"max_wait_s:{name}"] = t["max_no_progress_s"]
    return row


def _bar(total: int, out):
    """tqdm's bar on ``out`` (None: no bar, as in a report, where stderr reads like an error)."""
    from tqdm import tqdm

    return tqdm(total=total, file=out, disable=out is None, unit="config", desc="[sweep]", leave=True)


def sweep(base, grid, hours: float = 168.0, workers: int | None = None, progress=sys.stderr) -> pd.DataFrame:
    """Simulate every grid point; one row each, in grid order, Pareto front marked."""
    base = load_config(base)
    grid, notes = resolve_roles(base, load_grid(grid))
    if not grid:
        raise ConfigError("grid", "has no key left for this config (" + "; ".join(notes) + ").",
                          "add a key the config can take, e.g. `policy: [threshold, priority]`.")
    _check_keys(base, grid)
    points = _points(grid)
    jobs = [(i, base.raw, p, hours) for i, p in enumerate(points)]
    workers = workers or os.cpu_count() or 1
    bar = _bar(len(jobs), progress)
    rows = []
    if workers <= 1:
        for j in jobs:
            rows.append(_run_point(j))
            bar.update()
    else:
        chunk = max(1, min(16, len(jobs) // (workers * 8) or 1))
        pool = mp.get_context("fork" if sys.platform == "linux" else "spawn").Pool(workers, initializer=_quiet_worker)
        try:
            for r in pool.imap(_run_point, jobs, chunksize=chunk):
                rows.append(r)
                bar.update()
        except BaseException:  # SIGINT, or SIGTERM (which the CLI turns into SystemExit): end the workers too
            pool.terminate()
            raise
        finally:
            pool.close()
            pool.join()
    bar.close()
    df = pd.DataFrame(rows).sort_values("config_id").reset_index(drop=True)
    if not df["valid"].any():
        first = df.loc[0]
        point = ", ".join(f"{k[4:]}={_plain(v)}" for k, v in first.filter(like="set:").items())
        raise ConfigError("grid", f"no point of the grid is valid ({len(df)} tried); the first ({point}) "
                          f"fails with {first['error']}")
    df["pareto"] = pareto_front(df)
    df.attrs["hours"] = hours
    df.attrs["notes"] = notes
    return df


def pareto_front(df: pd.DataFrame) -> pd.Series:
    """Starvation-free configs that no other beats on both steady p95 and backfill per day."""
    ok = df["valid"].fillna(False).astype(bool) & ~df["starved"].fillna(True).astype(bool)
    cand = df[ok]
    out = pd.Series(False, index=df.index)
    if cand.empty:
        return out
    fresh = cand["steady_p95_s"].fillna(math.inf).to_numpy()
    back = cand["backfill_per_day"].fillna(0).to_numpy()
    front = []
    for i in range(len(cand)):
        dominated = ((fresh <= fresh[i]) & (back >= back[i]) & ((fresh < fresh[i]) | (back > back[i]))).any()
        front.append(not dominated)
    out[cand.index] = front
    return out


def choose_config(df: pd.DataFrame, base, freshness_target: float | None = None) -> dict:
    """Pick one config by the module's rule; return its overrides, row and the physical bound."""
    base = load_config(base)
    target = freshness_target if freshness_target is not None else base.starvation_bound
    valid = df["valid"].fillna(False).astype(bool)
    if not valid.any():
        raise KeepaOpsError(f"no point of the grid is a valid config; the first: {df['error'].iloc[0]}")
    ok = df[valid & ~df["starved"].fillna(True).astype(bool)]
    if ok.empty:
        raise KeepaOpsError("no starvation-free config in the grid. Fix: add policy: [priority] to the grid, "
                            "or smaller batch sizes.")
    # No live deal arriving in the steady-state window leaves nothing stale: count it as fresh.
    fresh = ok[ok["steady_p95_s"].fillna(0.0) <= target]
    if len(fresh):
        pick = fresh.assign(_p95=fresh["steady_p95_s"].fillna(0.0)).sort_values(
            ["backfill_per_day", "_p95", "tokens_wasted_at_cap", "config_id"],
            ascending=[False, True, True, True]).iloc[0].drop("_p95")
        rule = (f"most backfill per day among starvation-free configs with steady-state live p95 "
                f"<= {target / 3600:g} h")
    else:
        pick = ok.sort_values(["steady_p95_s", "config_id"]).iloc[0]
        rule = "no config met the freshness target: the starvation-free config with the lowest steady-state p95"
    overrides = {k[4:]: _plain(pick[k]) for k in df.columns if k.startswith("set:")}
    cfg = base.with_overrides(overrides)
    hours = df.attrs.get("hours", 168.0)
    bound = physical_bound(cfg, hours)
    got = float(pick["backfill_per_day"])
    b = bound.get("backfill_bound_per_day")
    return {"rule": rule, "config_id": int(pick["config_id"]), "overrides": overrides, "config": cfg,
            "row": pick.to_dict(), "bound": bound, "freshness_target_s": float(target),
            "backfill_share_of_bound": (got / b) if b else None}


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def write_fixed_schedule(rec: dict, path) -> Path:
    """Write the recommended config as YAML that ``keepa-ops run`` takes unchanged."""
    cfg: Config = rec["config"]
    raw = cfg.to_dict()
    path = Path(path)
    p95 = rec["row"]["steady_p95_s"]
    fresh = ("no live deals arrive in steady state" if p95 is None or p95 != p95
             else f"steady-state live p95 {p95 / 60:.1f} min")
    header = (f"# The fixed schedule, recommended by keepa-ops sweep (config #{rec['config_id']}).\n"
              f"# Rule: {rec['rule']}.\n"
              f"# Predicted: {fresh}, backfill "
              f"{rec['row']['backfill_per_day']:.0f} deals/day"
              + (f" ({100 * rec['backfill_share_of_bound']:.1f}% of the "
                 f"{rec['bound']['backfill_bound_per_day']:.0f}/day the refill leaves after live demand)"
                 if rec.get("backfill_share_of_bound") else "") + ".\n")
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    load_config(path)  # it must load back as it is
    return path
