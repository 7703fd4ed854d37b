"""The verdict rules. Each reads ``Evidence`` and either holds (with its evidence) or says
in one line why it does not. They are tried in ``RULES`` order; the first that holds
is the verdict, and every other one gives its ``why_not``.

The bound (``bound_s``, default 1 h) is how long a task may want tokens and save nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .columns import cite
from .evidence import Evidence

DEFICIT_MINUTES = 5.0        # Keepa's balance this many minutes of refill below zero is deep
DEFICIT_EPISODES = 3
LIVELOCK_GIVE_UPS = 5


@dataclass
class Finding:
    verdict: str
    holds: bool
    why_not: str = ""
    starved: list = field(default_factory=list)
    culprit: str | None = None
    evidence: list = field(default_factory=list)


def _h(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def insufficient_evidence(e: Evidence, bound_s: float) -> Finding:
    """No task is seen waiting, being granted, spending or giving up; or the log has no times."""
    name = "insufficient_evidence"
    token = e.events["event"].isin(["wait", "heartbeat", "grant", "spend", "abort", "429"])
    if e.tasks and e.start is not None and pd.notna(e.start) and e.end > e.start:
        return Finding(name, False, f"{len(e.tasks)} task(s) are seen waiting or spending over "
                                    f"{_h((e.end - e.start).total_seconds())} of log")
    if e.tasks and (e.start is None or pd.isna(e.start) or e.end <= e.start):
        why = "the log's lines carry no usable times (Python's default format has none), so no wait can be " \
              "measured: log with a time (Celery's default format, or basicConfig with %(asctime)s)"
    elif not token.any():
        why = "the log holds no token lines (no waits, grants, spends or give-ups of any task): give the " \
              "worker's log at INFO level, with the token manager's lines"
    elif (e.runs["task"].isna() & ~e.runs["started_in_log"]).any() if len(e.runs) else False:
        where = e.runs.loc[e.runs["task"].isna(), "where"].iloc[0]
        why = f"the rotated start of this run is missing ({where} is mid-run and nothing names its task): " \
              f"give the older files too (celery_worker.log.1, .2.gz, ...)"
    elif e.events["process"].isna().all():
        why = "the token lines name neither a worker process nor a task, and no task start/finish lines bracket " \
              "them: log the process name (Celery's default format) or the tasks' own start/finish lines"
    else:
        why = "the token lines cannot be tied to any task run"
    return Finding(name, True, evidence=[why])


def stall(e: Evidence, bound_s: float) -> Finding:
    """A task whose last run died (its process was killed, the worker restarted) or went silent
    while it had work, and that has not run since: it is dead, not waiting."""
    if not e.stalled:
        return Finding("stall", False, "every task's last run finished, or is still logging")
    lines = []
    for s in e.stalled:
        lines.append(f"{s['where']}: {s['task']} is dead since {s['since']} ({_h(s['for_s'])} before the log "
                     f"ends): {s['how']}" + (f"; every later tick ({s['skips_since']}) logged 'already running' "
                                             f"on the lock it left" if s["lock_held"] else "") + ".")
    return Finding("stall", True, starved=[], evidence=lines)


def unreachable_target(e: Evidence, bound_s: float) -> Finding:
    """A task waits for more tokens than the bucket holds (60 x the refill rate): unused tokens
    expire after an hour, so that wait never ends."""
    if not e.rate:
        return Finding("unreachable_target", False, "the refill rate is unknown, so the bucket's size is too")
    cap = e.capacity
    over = {n: t["target"] for n, t in e.tasks.items() if t["target"] is not None and t["target"] > cap + 1e-6}
    if not over:
        top = max((t["target"] for t in e.tasks.values() if t["target"] is not None), default=None)
        return Finding("unreachable_target", False,
                       f"every target ({top:g} at most) fits the bucket's {cap:g}" if top is not None
                       else "no task logs a numeric target")
    lines = []
    for n, tgt in over.items():
        w = e.waits[(e.waits["task"] == n) & (e.waits["target"] == tgt)]
        where = cite(w, 0) if len(w) else ""
        lines.append(f"{where}: {n} waits for {tgt:g} tokens, but at {e.rate:g} tokens/min the bucket holds at "
                     f"most {cap:g} (unused tokens expire after an hour): it can never start.")
    return Finding("unreachable_target", True, starved=sorted(over), evidence=lines)


def deficit_spiral(e: Evidence, bound_s: float) -> Finding:
    """Keepa's own balance (tokensLeft) goes deeper below zero than DEFICIT_MINUTES of refill,
    in at least DEFICIT_EPISODES separate dips or for longer than the bound in one: oversized
    calls at small balances leave every task waiting out the debt. The token manager's
    projections do not count."""
    kb = e.keepa_balance.sort_values("time")
    if kb.empty or not e.rate:
        return Finding("deficit_spiral", False, "the log shows no Keepa balance (tokensLeft) or no refill rate")
    depth = -DEFICIT_MINUTES * e.rate
    vals = kb["balance"].to_numpy()
    neg = vals < 0
    # a new dip starts at a negative reading after a non-negative one, or after long enough a
    # gap for the refill to have lifted the previous reading above zero
    gap_min = kb["time"].diff().dt.total_seconds().fillna(0).to_numpy() / 60.0
    recovered = np.r_[True, (~neg[:-1]) | (gap_min[1:] * e.rate >= -0.98 * vals[:-1])]
    starts = neg & recovered
    episodes = int(starts.sum())
    dip = np.cumsum(starts)                      # the dip each negative reading belongs to
    deep = kb[neg & (vals < depth)]
    lowest = float(vals.min())
    deep_episodes = int(len(np.unique(dip[neg & (vals < depth)])))
    # or one dip that stays deep for longer than the bound
    span = deep.groupby(dip[neg & (vals < depth)])["time"].agg(["min", "max"]) if len(deep) else None
    deep_for = float((span["max"] - span["min"]).dt.total_seconds().max()) if span is not None else 0.0
    if deep_episodes < DEFICIT_EPISODES and deep_for <= bound_s:
        return Finding("deficit_spiral", False,
                       f"Keepa's balance went below {depth:g} ({DEFICIT_MINUTES:g} min of refill) in "
                       f"{deep_episodes} dip(s), fewer than {DEFICIT_EPISODES}, and never stayed there for "
                       f"{_h(bound_s)}; lowest {lowest:g}")
    big = e.spends.groupby("task")["consumed"].median() if len(e.spends) else pd.Series(dtype=float)
    culprit = str(big.idxmax()) if len(big) else None
    waiting = sorted(set(e.waits["task"].dropna()))
    lines = [f"{cite(deep, 0)}: Keepa's balance fell below {depth:g} in {deep_episodes} of {episodes} "
             f"negative dips; lowest {lowest:g}. Keepa admits any call at a positive balance and debits its full "
             f"cost, so big calls at small balances leave every task waiting out the deficit."]
    if culprit:
        lines.append(f"largest calls: {culprit}, median {big.max():g} tokens each.")
    return Finding("deficit_spiral", True, starved=waiting, culprit=culprit, evidence=lines)


def _spent_by_others(e: Evidence, task: str, start, end) -> pd.Series:
    s = e.spends[(e.spends["time"] >= start) & (e.spends["time"] <= end)]
    return s.groupby("task")["consumed"].sum().drop(task, errors="ignore")


def livelock(e: Evidence, bound_s: float) -> Finding:
    """A task wakes and gives up again and again (at least LIVELOCK_GIVE_UPS times) for longer than
    the bound and saves nothing, while the other tasks together spend no more than it does in
    that stretch: the tokens go to its own unsaved work (peeks), or to nobody. Nobody starves
    it; it starves itself."""
    cands = []
    long_ = e.unsaved[(e.unsaved["aborts"] >= LIVELOCK_GIVE_UPS) & (e.unsaved["duration_s"] > bound_s)]
    for _, h in long_.iterrows():
        others = _spent_by_others(e, h["task"], h["start"], h["end"])
        own = e.spends[(e.spends["task"] == h["task"]) & (e.spends["time"] >= h["start"])
                       & (e.spends["time"] <= h["end"])]["consumed"].sum()
        if others.sum() <= own:
            cands.append((h, own))
    if not cands:
        return Finding("livelock", False, "no task gave up again and again for longer than the bound while "
                                          "the tokens went to nobody else")
    lines = []
    for h, own in cands:
        t = e.tasks[h["task"]]
        lines.append(f"{cite(h)}: from {h['start']} for {_h(h['duration_s'])}, {h['task']} woke and gave up "
                     f"{h['aborts']} times and saved nothing, spending {own:,.0f} tokens itself "
                     f"({t['tokens']:,.0f} in all, {t['saved']} saves in the whole log).")
    return Finding("livelock", True, starved=[], evidence=lines)


def starvation(e: Evidence, bound_s: float) -> Finding:
    """A task wants tokens for longer than the bound, granted nothing it waited for and saving
    nothing, while another task spends the refill; the culprit is the task that spent the most
    tokens during that stretch."""
    long_ = e.hungry[e.hungry["duration_s"] > bound_s].sort_values("duration_s", ascending=False)
    starved, culprit, lines = [], None, []
    for _, h in long_.iterrows():
        others = _spent_by_others(e, h["task"], h["start"], h["end"])
        others = others[others > 0]
        if others.empty:
            continue
        if h["task"] not in starved:
            starved.append(h["task"])
        if culprit is None:
            culprit = str(others.idxmax())
            t, c = e.tasks[h["task"]], e.tasks[culprit]
            ended = "and still waiting when the log ends" if h["end"] >= e.end - pd.Timedelta(seconds=1) else \
                f"until {h['end']}"
            tgt = "not logged" if t["target"] is None else f"{t['target']:g}"
            lines.append(f"{cite(h)}: {h['task']} wanted tokens and saved nothing for {_h(h['duration_s'])} "
                         f"(from {h['start']}, {ended}; target {tgt}).")
            first = e.waits[(e.waits["task"] == h["task"]) & (e.waits["start"] >= h["start"])].head(1)
            if len(first) and pd.notna(first["balance"].iloc[0]) and pd.notna(first["target"].iloc[0]):
                lines.append(f"{cite(first, 0)}: {h['task']} waits at Current "
                             f"{first['balance'].iloc[0]:.2f}, Target {first['target'].iloc[0]:g}.")
            calls = e.spends[(e.spends["task"] == culprit) & (e.spends["time"] >= h["start"])
                             & (e.spends["time"] <= h["end"])]
            lines.append(f"{cite(calls, 0)} to {cite(calls, -1)}: meanwhile {culprit} made "
                         f"{len(calls)} calls and spent {others[culprit]:,.0f} tokens"
                         + (f" (its target: {c['target']:g})" if c["target"] is not None else "") + ".")
            cw = e.waits[e.waits["task"] == culprit]
            if c["target"] is not None and t["target"] is not None and c["target"] < t["target"] and len(cw):
                lines.append(f"{cite(cw, 0)}: {culprit}'s target ({c['target']:g}) is below "
                             f"{h['task']}'s ({t['target']:g}): the refill reaches it first every time, and each of "
                             f"its calls drops the balance below {h['task']}'s target again.")
            elif c["target"] is None:
                lines.append(f"{cite(calls, 0)}: {culprit} logs no wait: it takes small calls as the "
                             f"refill comes in (e.g. Priority Pass), so the balance never climbs to "
                             f"{h['task']}'s target.")
    if not starved:
        worst = float(e.hungry["duration_s"].max()) if len(e.hungry) else 0.0
        return Finding("starvation", False, f"no task wanted tokens for longer than {_h(bound_s)} while another "
                                            f"spent them (longest stretch without saved work: {_h(worst)})")
    return Finding("starvation", True, starved=sorted(starved), culprit=culprit, evidence=lines)


def healthy(e: Evidence, bound_s: float) -> Finding:
    """None of the above: every task that wanted tokens saved work within the bound."""
    lines = []
    for task, t in e.tasks.items():
        w = e.waits[e.waits["task"] == task]
        if len(w):
            worst = w.loc[w["duration_s"].idxmax()]
            lines.append(f"{cite(worst)}: {task}'s longest wait, {_h(worst['duration_s'])} "
                         f"({worst['ended_by']}); {t['waits']} waits, {t['saved']} saves.")
    return Finding("healthy", True, evidence=lines + [
        "every wait ended within the bound or in saved work; no deficit spiral, no repeated give-ups, no stall."])


RULES = (insufficient_evidence, stall, unreachable_target, deficit_spiral, livelock, starvation, healthy)
VERDICTS = tuple(r.__name__ for r in RULES)


def decide(e: Evidence, bound_s: float) -> tuple[Finding, dict]:
    """The first rule that holds, and one line for each other rule saying why it does not."""
    chosen, why_not = None, {}
    for rule in RULES:
        f = rule(e, bound_s)
        if chosen is None and f.holds:
            chosen = f
            if f.verdict == "insufficient_evidence":
                break
        elif f.verdict != "healthy" and f.verdict != (chosen.verdict if chosen else None):
            why_not[f.verdict] = f.why_not if not f.holds else f"also holds: {'; '.join(f.evidence)[:300]}"
    if chosen.verdict != "healthy":
        why_not["healthy"] = f"{chosen.verdict} holds"
    return chosen, why_not
