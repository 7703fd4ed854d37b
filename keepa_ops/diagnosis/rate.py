"""The refill rate a log shows, and where that number came from.

In order of trust:

1. ``keepa``: Keepa's own ``refillRate`` (token-status lines, our JSON events);
2. ``task``: the task's own reading of it (``Low Refill Rate (8.0/min)``);
3. ``wait_arithmetic``: the token manager's sums. ``Current X, Target T ... Waiting for W s``
   implies the rate it assumed, (T - X) x 60 / W per minute. Where one target has several
   such lines, the rate is -60 / slope of W against X, which holds whatever constant the
   code adds to the target (the legacy code waited for target + 5);
4. ``balance_slopes``: rises of the balance between two observations 1-15 minutes
   apart with no call between them, strictly below the cap (a balance sitting at the cap
   rises by nothing, which would read as a tenth of the real rate);
5. ``unknown``: the log does not say; nothing is guessed.

Keepa's plans refill whole tokens per minute, so an estimate within 3 % of a whole number
is reported as that number.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import codes, is_in
from .readings import observed_balance

MIN_SLOPE_GAP_S = 60.0
MAX_SLOPE_GAP_S = 900.0
NEAR_CAP = 0.97
MIN_ARITHMETIC_LINES = 3
PROJECTIONS = {"request_blocked"}


def _snap(r: float) -> float:
    k = round(r)
    return float(k) if k > 0 and abs(r - k) <= 0.03 * k else round(float(r), 2)


def refill_rate(events: pd.DataFrame) -> tuple[float | None, str, str]:
    """(tokens per minute or None, source, how it was found)."""
    rr = events["refill_rate"]
    keepa = rr[rr.notna() & (events["kind"] != "rate_adjust")]
    if len(keepa):
        return _snap(float(keepa.median())), "keepa", f"Keepa's refillRate in {len(keepa)} lines"
    own = rr[rr.notna()]
    if len(own):
        return _snap(float(own.median())), "task", f"the task's own 'Refill Rate' lines ({len(own)})"
    r, how = _from_wait_arithmetic(events)
    if r is not None:
        return _snap(r), "wait_arithmetic", how
    r, how = _from_slopes(events)
    if r is not None:
        return _snap(r), "balance_slopes", how
    return None, "unknown", "the log shows no refill rate: no refillRate, no wait arithmetic, no balance rising"


def _three_values(x: np.ndarray) -> bool:
    """Whether ``x`` holds at least three distinct values (found without sorting it)."""
    if not len(x):
        return False
    other = x[x != x[0]]
    return len(other) > 0 and bool((other != other[0]).any())


def _from_wait_arithmetic(events: pd.DataFrame):
    e_codes, e_names = codes(events["event"])
    balance = events["balance"].to_numpy(dtype="float64", na_value=np.nan)
    secs = events["wait"].to_numpy(dtype="float64", na_value=np.nan)
    rows = np.flatnonzero(is_in(e_codes, e_names, {"wait", "abort"}) & ~np.isnan(balance) & (secs > 0))
    if not len(rows):
        return None, ""
    # one group per (kind, target), taken in the order of the kind's name, then the target (no target: -1)
    kind, kinds = codes(events["kind"].iloc[rows])
    rank = np.argsort(np.argsort(np.asarray([str(k) for k in kinds] + ["nan"], dtype=object), kind="stable"))
    target = events["target"].to_numpy(dtype="float64", na_value=np.nan)[rows]
    target = np.where(np.isnan(target), -1.0, target)
    order = np.lexsort((np.arange(len(rows)), target, rank[kind]))
    x_all, secs_all, k_all, t_all = balance[rows][order], secs[rows][order], rank[kind][order], target[order]
    bounds = np.flatnonzero(np.r_[True, (k_all[1:] != k_all[:-1]) | (t_all[1:] != t_all[:-1]), True])
    estimates, weights = [], []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        x, s, tgt = x_all[a:b], secs_all[a:b], t_all[a]
        if _three_values(x):
            slope, _ = np.polyfit(x, s, 1)
            if slope < 0:
                estimates.append(-60.0 / slope)
                weights.append(b - a)
                continue
        if tgt >= 0:
            per = (tgt - x) * 60.0 / s
            per = per[per > 0]
            if len(per):
                estimates.append(float(np.median(per)))
                weights.append(len(per))
    # one or two lines are not enough: the code may add a constant to its target (+5 in one era)
    if not estimates or sum(weights) < MIN_ARITHMETIC_LINES:
        return None, ""
    r = float(np.average(estimates, weights=weights)) if len(estimates) > 1 else estimates[0]
    return r, f"the token manager's wait arithmetic ({int(sum(weights))} 'Current X, Target T, wait W' lines)"


def _from_slopes(events: pd.DataFrame):
    # the token manager's projections (a reserve it made, a request it blocked) are not balances
    own = events[~events["kind"].isin(PROJECTIONS)]
    obs = own.assign(b=observed_balance(own))
    obs = obs.dropna(subset=["b", "time"]).sort_values("time", kind="stable")
    if len(obs) < 2:
        return None, ""
    dt = obs["time"].diff().dt.total_seconds().to_numpy()
    db = obs["b"].diff().to_numpy()
    prev = obs["b"].shift().to_numpy()
    quiet = ~obs["event"].isin(["spend", "429", "sync", "grant"]).to_numpy()
    ok = quiet & (dt >= MIN_SLOPE_GAP_S) & (dt <= MAX_SLOPE_GAP_S) & (db > 0)
    if not ok.any():
        return None, ""
    slopes = db[ok] / dt[ok] * 60.0
    r = float(np.median(slopes))
    below = ok & (np.maximum(prev, obs["b"].to_numpy()) < NEAR_CAP * 60 * r)
    if below.any():
        slopes = db[below] / dt[below] * 60.0
        r = float(np.median(slopes))
    return r, f"balance rises between calls ({len(slopes)} pairs of lines 1-15 min apart, below the cap)"
