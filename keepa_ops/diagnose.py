"""Who starved whom, why, and what to change: a verdict from parsed token events.

Verdicts, checked in this order (the first that holds is the verdict):

``unreachable_target``  a task waits for more than the bucket can hold (60 x refill).
``deficit_spiral``      the balance goes more than 10 minutes of refill below zero,
                        again and again: oversized spends make everyone wait.
``livelock``            a task keeps waking and giving up (exits, pauses, blocks)
                        at least 5 times and never makes progress.
``starvation``          a task waits with work longer than the bound (default 1 h)
                        while another task spends the refill: the culprit is the
                        task that spent the most tokens during that wait.
``healthy``             none of the above.
``insufficient_evidence`` the log shows no task waiting or spending tokens (an empty log,
                        or token lines that name neither a task nor a worker process).

Invariant: a recommendation is never a guess. It is re-simulated on the demand
rebuilt from the log (``replay.rebuild_config``) and reported with what the
simulation predicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

WAIT_START = {"wait"}
WAIT_GOING = {"heartbeat"}
PROGRESS = {"grant", "spend"}
GIVE_UP = {"abort"}
MAX_SLOPE_GAP_S = 900.0  # refill is estimated only from balances at most this far apart
STALL_AFTER_S = 900.0  # at least this silent (and 3 heartbeat gaps) before the log ends: a stall


def wait_intervals(events: pd.DataFrame) -> pd.DataFrame:
    """One row per wait: task, start, end (last evidence), target, how it ended."""
    cols = ["task", "start", "end", "target", "balance", "ended_by", "duration_s"]
    ev = events[events["task"].notna() & events["event"].isin(
        WAIT_START | WAIT_GOING | PROGRESS | GIVE_UP | {"run_finish", "run_start"})]
    rows = []
    log_end = events["time"].max()
    for task, g in ev.groupby("task", sort=True):
        beats = g.loc[g["event"].isin(WAIT_GOING), "time"].diff().dt.total_seconds().dropna()
        stall_after = max(STALL_AFTER_S, 3 * float(beats.median())) if len(beats) else STALL_AFTER_S
        open_ = None
        for t, e, target, bal, consumed in zip(g["time"], g["event"], g["target"], g["balance"], g["consumed"]):
            if e in WAIT_START or (e in WAIT_GOING and open_ is None):
                if open_ is None:
                    open_ = [task, t, t, target, bal, None]
                else:
                    open_[2] = t
                    if not pd.isna(target):
                        open_[3] = target
            elif e in WAIT_GOING:
                open_[2] = t
            elif open_ is not None and (e in GIVE_UP or e == "grant" or e == "run_finish"
                                        or (e == "spend" and (pd.isna(consumed) or consumed > 0))):
                open_[2] = t
                open_[5] = {"grant": "grant", "spend": "grant", "run_finish": "run_finish"}.get(e, "abort")
                rows.append(open_)
                open_ = None
        if open_ is not None:
            open_[5] = "stall" if (log_end - open_[2]).total_seconds() > stall_after else "open"
            rows.append(open_)
    df = pd.DataFrame(rows, columns=cols[:-1])
    df["duration_s"] = (df["end"] - df["start"]).dt.total_seconds() if len(df) else pd.Series(dtype="float64")
    return df


def observed_refill_rate(events: pd.DataFrame) -> float | None:
    """Keepa's word (refillRate) if the log has it, else the slope of balances inside waits."""
    r = events["refill_rate"].dropna()
    if len(r):
        return float(r.median())
    # Consecutive balance observations with only refill between them: the later one is not
    # a spend, a refusal or a sync (those move the balance by other means).
    obs = events.assign(b=events["tokens_left"].where(events["tokens_left"].notna(), events["balance"]))
    obs = obs.dropna(subset=["b", "time"]).sort_values("time", kind="stable")
    dt = obs["time"].diff().dt.total_seconds()
    db = obs["b"].diff()
    # only neighbours minutes apart: across a long silence anything may have happened
    ok = (dt > 0) & (dt <= MAX_SLOPE_GAP_S) & (db > 0) & ~obs["event"].isin(["spend", "429", "sync"])
    slopes = (db[ok] / dt[ok] * 60).tolist()
    return float(np.median(slopes)) if slopes else None


@dataclass
class Diagnosis:
    verdict: str
    starved: list[str]
    culprit: str | None
    refill_per_minute: float | None
    tasks: dict
    evidence: list[str]
    recommendation: dict
    waits: pd.DataFrame = field(repr=False, default=None)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "starved": self.starved, "culprit": self.culprit,
                "refill_per_minute": self.refill_per_minute, "tasks": self.tasks, "evidence": self.evidence,
                "recommendation": self.recommendation}

    def report(self) -> str:
        lines = [f"verdict: {self.verdict}"]
        if self.starved:
            lines.append(f"starved: {', '.join(self.starved)}" + (f" (by {self.culprit})" if self.culprit else ""))
        if self.refill_per_minute:
            lines.append(f"refill observed: {self.refill_per_minute:g} tokens/min "
                         f"(bucket holds {60 * self.refill_per_minute:g})")
        for name, t in self.tasks.items():
            tgt = "?" if t["target"] is None else f"{t['target']:g}"
            lines.append(f"  {name:24} target {tgt:>6}  waits {t['waits']:>4}  longest {t['max_wait_s'] / 3600:6.2f} h  "
                         f"grants {t['grants']:>5}  tokens {t['tokens']:>9,.0f}  gave up {t['aborts']}")
        lines.append("evidence:")
        lines += [f"  - {e}" for e in self.evidence]
        rec = self.recommendation
        if rec.get("change"):
            lines.append(f"recommendation: {rec['summary']}")
            p = rec.get("predicted")
            if p:
                lines.append(f"  checked by simulation over {p['hours']:g} h of the rebuilt demand: "
                             f"starved {p['starved'] or 'nobody'}; " + "; ".join(
                                 f"{n} longest wait {v['max_wait_s'] / 3600:.2f} h, {v['grants']} grants"
                                 for n, v in p["tasks"].items()))
        else:
            lines.append(f"recommendation: {rec.get('summary', 'none')}")
        return "\n".join(lines)


def _mode(s: pd.Series):
    s = s.dropna()
    return float(s.mode().iloc[0]) if len(s) else None


def diagnose(parsed, bound_s: float = 3600.0, check: bool = True) -> Diagnosis:
    """Diagnose a ``ParsedLog`` (or its events DataFrame)."""
    events = parsed.events if hasattr(parsed, "events") else parsed
    events = events.sort_values("time", kind="stable")
    waits = wait_intervals(events)
    rate = observed_refill_rate(events)
    cap = 60 * rate if rate else None
    tasks = {}
    names = sorted(set(events.loc[events["event"].isin(WAIT_START | WAIT_GOING | PROGRESS | GIVE_UP),
                                  "task"].dropna()))
    for name in names:
        e = events[events["task"] == name]
        w = waits[waits["task"] == name]
        spends = e[(e["event"] == "spend") & (e["consumed"].fillna(0) > 0)]
        tasks[name] = {
            "target": _mode(e.loc[e["event"].isin(WAIT_START | WAIT_GOING | GIVE_UP), "target"]),
            "waits": int(len(w)),
            "max_wait_s": float(w["duration_s"].max()) if len(w) else 0.0,
            "grants": int(len(spends)),
            "tokens": float(spends["consumed"].sum()),
            "aborts": int((e["event"] == "abort").sum()),
            "stalled": bool((w["ended_by"] == "stall").any()) if len(w) else False,
        }
    evidence: list[str] = []
    verdict, starved, culprit = "healthy", [], None
    bal = events["tokens_left"].where(events["tokens_left"].notna(), events["balance"]).dropna()

    if not tasks:
        n_token = int(events["event"].isin(WAIT_START | WAIT_GOING | PROGRESS | GIVE_UP).sum())
        evidence.append(f"{len(events)} token events, {n_token} of them waits, grants or spends, but none names "
                        f"its task or worker process: nothing to attribute." if n_token else
                        "the log holds no waits, grants or spends: nothing to diagnose.")
        rec = {"change": {}, "summary": "log the worker process (Celery's default format) or the task name, "
                                        "and the token manager's lines, then diagnose again"}
        return Diagnosis("insufficient_evidence", [], None, rate, {}, evidence, rec, waits)
    unreachable = [n for n, t in tasks.items() if cap and t["target"] is not None and t["target"] > cap + 1e-6]
    deep = rate is not None and len(bal) and (bal < -10 * rate).sum() >= 3
    livelocked = [n for n, t in tasks.items() if t["aborts"] >= 5 and t["grants"] == 0]
    long_waits = waits[waits["duration_s"] > bound_s].sort_values("duration_s", ascending=False)

    if unreachable:
        verdict, starved = "unreachable_target", unreachable
        for n in unreachable:
            evidence.append(f"{n} waits for {tasks[n]['target']:g} tokens, but at {rate:g} tokens/min the bucket "
                            f"holds at most {cap:g} (unused tokens expire after an hour): it can never start.")
    elif deep:
        verdict = "deficit_spiral"
        starved = [n for n, t in tasks.items() if t["waits"]]
        evidence.append(f"the balance fell below -{10 * rate:g} (10 minutes of refill) {int((bal < -10 * rate).sum())} "
                        f"times; lowest {bal.min():g}. Keepa admits any call at a positive balance and debits "
                        f"the full cost, so big spends at small balances leave everyone waiting out the deficit.")
        big = events[(events["event"] == "spend") & (events["consumed"] > 0)].groupby("task")["consumed"].median()
        if len(big):
            culprit = str(big.idxmax())
            evidence.append(f"largest spends: {culprit}, median {big.max():g} tokens per call.")
    elif livelocked:
        verdict, starved = "livelock", livelocked
        for n in livelocked:
            evidence.append(f"{n} gave up {tasks[n]['aborts']} times (e.g. 'Wait > 60s. Exiting task.') "
                            f"and made no progress: it wakes, sees too few tokens, exits, and is rescheduled.")
        others = {m: t["tokens"] for m, t in tasks.items() if m not in livelocked and t["tokens"] > 0}
        if others:
            culprit = max(others, key=others.get)
            evidence.append(f"meanwhile {culprit} spent {others[culprit]:g} tokens.")
    elif len(long_waits):
        worst = long_waits.iloc[0]
        verdict, starved = "starvation", sorted(set(long_waits["task"]))
        during = events[(events["time"] >= worst["start"]) & (events["time"] <= worst["end"])
                        & (events["event"] == "spend") & (events["task"] != worst["task"])]
        spent = during.groupby("task")["consumed"].sum()
        if len(spent):
            culprit = str(spent.idxmax())
        t = tasks[worst["task"]]
        evidence.append(f"{worst['task']} waited {worst['duration_s'] / 3600:.1f} h with work "
                        f"(from {worst['start']} to {worst['end']}, target {t['target']:g}, "
                        f"{'still waiting' if worst['ended_by'] in ('open', 'stall') else 'then ' + worst['ended_by']}).")
        first_wait = events[(events["task"] == worst["task"]) & (events["event"] == "wait")].head(1)
        if len(first_wait):
            r = first_wait.iloc[0]
            evidence.append(f"{r['source']}:{r['line']}: {worst['task']} waits at Current {r['balance']:.2f}, "
                            f"Target {r['target']:g}.")
        if culprit:
            c = tasks[culprit]
            evidence.append(f"during that wait {culprit} made {int((during['task'] == culprit).sum())} calls and "
                            f"spent {spent[culprit]:g} tokens (its target: {c['target']:g}).")
            if c["target"] is not None and t["target"] is not None and c["target"] < t["target"]:
                evidence.append(f"{culprit}'s target ({c['target']:g}) is below {worst['task']}'s ({t['target']:g}): "
                                f"the refill reaches it first every time, and each spend drops the balance "
                                f"below {worst['task']}'s target again.")
        if any(tasks[n]["stalled"] for n in starved):
            evidence.append("note: a waiting task went silent before the log ends; a stall, not just a wait.")
    else:
        evidence.append("no task waited longer than the bound, no deficit spiral, no repeated give-ups.")

    rec = recommend(events, verdict, starved, culprit, tasks, rate, bound_s, check)
    return Diagnosis(verdict, starved, culprit, rate, {n: {k: v for k, v in t.items()} for n, t in tasks.items()},
                     evidence, rec, waits)


def recommend(events, verdict, starved, culprit, tasks, rate, bound_s, check=True) -> dict:
    """A change in numbers, re-simulated on the demand rebuilt from the log."""
    from .replay import rebuild_config
    from .simulate import simulate

    if verdict == "healthy" or rate is None:
        return {"change": {}, "summary": "no change needed" if verdict == "healthy" else
                "the log shows no refill rate; add Keepa's token status to the log"}
    base, assumptions = rebuild_config(events)
    raw = base.to_dict()
    change: dict = {"policy": "priority", "starvation_bound": f"{bound_s:g}s"}
    words = [f"switch the admission policy from '{raw.get('policy')}' to 'priority'"]
    # Under priority each task is served within the bound only if one batch of every task
    # fits in one bound's refill (policies.py); cut the largest batches until they do, with 10% slack.
    budget = 0.9 * rate * bound_s / 60.0
    cap = 60 * rate
    sizes = {n: t["batch_size"] for n, t in raw["tasks"].items()}

    def cost(n):
        t = raw["tasks"][n]
        return sizes[n] * t["cost_per_item"] + t.get("page_cost", 0)

    while sum(cost(n) for n in sizes) > budget or any(cost(n) > cap for n in sizes):
        n = max(sizes, key=cost)
        if sizes[n] <= 1:
            break
        sizes[n] -= 1
    for n, b in sizes.items():
        if b != raw["tasks"][n]["batch_size"]:
            change[f"tasks.{n}.batch_size"] = b
            words.append(f"cut {n}'s batch from {raw['tasks'][n]['batch_size']} to {b} "
                         f"({cost(n):.0f} tokens a call, so one call of each task fits in "
                         f"{bound_s / 3600:g} h of refill)")
    if verdict == "livelock":
        for n in starved:
            change[f"tasks.{n}.max_wait"] = None
            words.append(f"let {n} wait for its tokens instead of exiting")
    for n, t in raw["tasks"].items():
        change[f"tasks.{n}.priority"] = 1 if t["role"] == "upserter" else 2
    summary = "; ".join(words) + " (upserter priority 1, backfiller 2, starvation bound " + f"{bound_s / 3600:g} h)."
    out = {"change": change, "summary": summary, "rebuilt": raw, "assumptions": assumptions}
    if check:
        hours = max(24.0, (events["time"].max() - events["time"].min()).total_seconds() / 3600)
        try:
            alt = base.with_overrides(change)
        except Exception as e:  # the change itself is invalid for this demand: say so, do not guess
            out["predicted"] = None
            out["summary"] += f" (not checked: {e})"
            return out
        out["predicted"] = {"hours": hours, **simulate(alt, hours).brief()}
        out["as_logged_simulated"] = {"hours": hours, **simulate(base, hours).brief()}
    return out
