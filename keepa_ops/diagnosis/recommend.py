"""What to change, checked by replay before it is offered.

* ``stall``: an operational fix (clear the named lock, give locks an expiry, restart the
  worker), never a config change: no setting brings back a dead run.
* ``healthy`` / ``insufficient_evidence``: nothing to change.
* otherwise a keepa-ops config change (the ``priority`` policy, and batches cut until one
  call of every task fits in one bound's refill; for a livelock, waiting instead of
  exiting), plus the same fix in the legacy pipeline's own terms (batch size, target,
  schedule, burst). Each is replayed on the demand rebuilt from the log
  (``demand.rebuild_config``); a change is offered only if its replay starves nobody.

Invariant: ``offered`` is True only for a change whose simulation removed the problem.
"""
from __future__ import annotations

import json

import numpy as np

from ..errors import KeepaOpsError
from ..keepa.meter import DEAL_PAGE_COST
from ..simulation.simulate import simulate
from .demand import rebuild_config

PEEK_SHARE = 0.25  # at most this share of the refill goes to the Upserter's deal-list peeks


def _cost(t: dict, batch: int) -> float:
    return batch * t["cost_per_item"] + t.get("page_cost", 0)


def _every_s(every) -> float | None:
    from ..core.schedule import parse_duration

    try:
        return parse_duration(every, "every")
    except Exception:  # continuous, cron
        return None


def _burst_advice(evidence, task: str) -> str | None:
    """For a peek/commit livelock: the burst a run needs so that a page, a peek and a commit all fit
    after Recharge Mode, from the calls the log shows; or the scan size that fits the burst."""
    ev = evidence.events[evidence.events["task"] == task]
    sp = evidence.spends[evidence.spends["task"] == task]
    burst = evidence.tasks[task]["target"]
    page = sp.loc[sp["kind"] == "fetched", "consumed"].median()
    peek = sp.loc[sp["kind"] == "light_call", "consumed"].median()
    floors = ev.loc[ev["kind"] == "recharge_enter", "threshold"].dropna()
    commit = floors.median() if len(floors) else np.nan
    scans = [json.loads(d).get("scanned") for d in ev.loc[ev["kind"] == "peek_complete", "detail"].dropna()]
    scans = [x for x in scans if x]
    if burst is None or any(np.isnan(x) for x in (page, peek, commit)):
        return None
    need = page + peek + commit
    if need <= burst:
        return None
    text = (f"{task}: raise the burst threshold from {burst:g} to at least {need:.0f}: after Recharge Mode a run "
            f"pays a deal page ({page:g}) and a peek ({peek:g}) and then needs {commit:g} to commit")
    if scans:
        scanned = float(np.median(scans))
        per = peek / scanned
        fits = int((burst - page - commit) // per)
        if fits >= 1:
            text += f"; or cut SCAN_BATCH_SIZE from {scanned:g} to {fits} ({per:.1f} tokens per peeked ASIN)"
    return text


def recommend(evidence, finding, bound_s: float, check: bool = True) -> dict:
    verdict = finding.verdict
    if verdict == "stall":
        fixes = [s["fix"] for s in evidence.stalled]
        return {"offered": True, "kind": "operational", "change": {}, "operational": fixes,
                "summary": "; ".join(fixes) + "."}
    if verdict in ("healthy", "insufficient_evidence"):
        return {"offered": False, "change": {},
                "summary": "no change needed" if verdict == "healthy" else "nothing to recommend without evidence"}
    if not evidence.rate:
        return {"offered": False, "change": {}, "summary": "the log shows no refill rate, so no change can be "
                                                           "checked; log Keepa's token status"}
    try:
        base, assumptions = rebuild_config(evidence)
    except KeepaOpsError as e:
        return {"offered": False, "change": {}, "summary": f"no change can be checked: {e}"}
    raw = base.to_dict()
    rate, cap = evidence.rate, 60 * evidence.rate
    budget = 0.9 * rate * bound_s / 60.0
    tasks = raw["tasks"]
    # Every Upserter run peeks at the deal list, and Keepa charges a page for it whatever the
    # config believes: runs so frequent that peeks take over a quarter of the refill leave the
    # batches nothing, so space them out first (to the first of 5, 10, 15, 30, 60 min that fits).
    spacing: dict[str, float] = {}
    for n, t in tasks.items():
        every = _every_s(t["every"]) if t["role"] == "upserter" else None
        if every and DEAL_PAGE_COST * 60.0 / every > PEEK_SHARE * rate:
            spacing[n] = next((m * 60.0 for m in (5, 10, 15, 30, 60)
                               if DEAL_PAGE_COST / m <= PEEK_SHARE * rate), 3600.0)
            budget -= DEAL_PAGE_COST * bound_s / spacing[n]
    sizes = {n: t["batch_size"] for n, t in tasks.items()}
    # Under priority each task is served within the bound only if one batch of every task fits in
    # one bound's refill (policies.py): cut the largest batches until they do, with 10 % slack.
    while sum(_cost(tasks[n], sizes[n]) for n in sizes) > budget or any(
            _cost(tasks[n], sizes[n]) > cap for n in sizes):
        n = max(sizes, key=lambda k: _cost(tasks[k], sizes[k]))
        if sizes[n] <= 1:
            break
        sizes[n] -= 1
    change: dict = {"policy": "priority", "starvation_bound": f"{bound_s:g}s"}
    words = [f"switch the admission policy from '{raw.get('policy')}' to 'priority'"]
    legacy_change, legacy = {}, []
    for n, every in spacing.items():
        change[f"tasks.{n}.every"] = f"{every:g}s"
        words.append(f"run {n} every {every / 60:g} min instead of every {_every_s(tasks[n]['every']):g} s "
                     f"(each run's deal-list peek costs Keepa's {DEAL_PAGE_COST} tokens)")
    for n, b in sizes.items():
        if b != tasks[n]["batch_size"]:
            change[f"tasks.{n}.batch_size"] = legacy_change[f"tasks.{n}.batch_size"] = b
            words.append(f"cut {n}'s batch from {tasks[n]['batch_size']} to {b} ({_cost(tasks[n], b):.0f} tokens "
                         f"a call, so one call of each task fits in {bound_s / 3600:g} h of refill)")
            legacy.append(f"{n}: batch size {tasks[n]['batch_size']} -> {b} (target "
                          f"{_cost(tasks[n], tasks[n]['batch_size']) + tasks[n]['threshold']:g} -> "
                          f"{_cost(tasks[n], b) + tasks[n]['threshold']:g})")
    if verdict == "livelock":
        for n in tasks:
            change[f"tasks.{n}.max_wait"] = legacy_change[f"tasks.{n}.max_wait"] = None
            words.append(f"let {n} wait for its tokens instead of exiting")
            legacy.append(_burst_advice(evidence, n) or
                          f"{n}: drop the 'wait > 60 s: exit the task' rule, so a run that has paid for its "
                          f"peek also commits")
    for n, t in tasks.items():
        change[f"tasks.{n}.priority"] = 1 if t["role"] == "upserter" else 2
    culprit = finding.culprit
    if verdict == "starvation" and culprit in tasks and tasks[culprit]["role"] == "upserter":
        every = _every_s(tasks[culprit]["every"])
        if every is not None and every < 600:
            legacy_change[f"tasks.{culprit}.every"] = "600s"
            legacy.append(f"{culprit}: Beat schedule every {every:g} s -> */10, which frees most of the refill "
                          f"between its runs")
    up = [n for n, t in tasks.items() if t["role"] == "upserter"]
    if len(tasks) > 1:
        legacy.append("give " + (", ".join(up) or "the live feed") + " priority in the token manager: a "
                      "backfill call waits while a live-feed call waits, and is promoted only after waiting the "
                      "bound (keepa-ops' priority gate)")
    summary = "; ".join(words) + f" (upserter priority 1, backfiller 2, starvation bound {bound_s / 3600:g} h)."
    out = {"offered": False, "kind": "config", "change": change, "summary": summary, "legacy": legacy,
           "rebuilt": raw, "assumptions": assumptions}
    if not check:
        return out
    hours = max(24.0, (evidence.end - evidence.start).total_seconds() / 3600)
    try:
        alt = base.with_overrides(change)
    except Exception as e:  # the change itself is invalid for this demand: say so, do not guess
        out["predicted"] = None
        out["summary"] += f" Not offered: it is not a valid config for this demand ({e})."
        return out
    as_logged = simulate(base, hours).brief()
    out["as_logged_simulated"] = {"hours": hours, **as_logged}
    out["predicted"] = {"hours": hours, **simulate(alt, hours).brief()}
    out["offered"] = out["predicted"]["starved"] == []
    if legacy_change:
        try:
            lalt = base.with_overrides(legacy_change)
            out["legacy_predicted"] = {"hours": hours, "change": legacy_change, **simulate(lalt, hours).brief()}
        except Exception:
            out["legacy_predicted"] = None
    if not out["offered"]:
        out["summary"] = ("No change found that removes the problem in a replay of the logged demand (tried: "
                          + summary + f" It still starved {out['predicted']['starved']}.)")
    return out
