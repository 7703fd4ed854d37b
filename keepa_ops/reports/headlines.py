"""The first lines of each report: what a reader needs before any figure, as Markdown.

Invariant: a headline states only what its step computed (the diagnosis, the sweep's
recommendation, the run's result); it computes nothing of its own.
"""
from __future__ import annotations


def _h(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "n/a"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def parsed(p) -> str:
    s = p.stats
    tasks = p.task_names()
    return (f"**Read {s['files']} file(s), {s['lines']:,} lines: {s['events']:,} token events**, "
            f"{s['skipped']:,} skipped and kept aside. Tasks seen: {', '.join(tasks) or 'none'}.")


def diagnosis(d) -> str:
    """Verdict, who starved whom, the change, and what the replay predicts."""
    lines = [f"**Verdict: {d.verdict}.**"]
    if d.starved:
        lines.append(f"Starved: {', '.join(d.starved)}" + (f", by {d.culprit}." if d.culprit else "."))
    if d.stalled:
        lines.append("Stalled: " + ", ".join(f"{s['task']} (dead since {s['since']})" for s in d.stalled) + ".")
    rec = d.recommendation or {}
    if rec.get("offered"):
        pred = rec.get("predicted") or {}
        after = pred.get("starved")
        lines.append(f"Change: {rec.get('summary')}")
        if after is not None:
            lines.append(f"Predicted by replaying the logged demand: starved after the change: "
                         f"{', '.join(after) if after else 'none'}.")
    else:
        lines.append(f"Change: {rec.get('summary') or 'none'}.")
    return "\n\n".join(lines)


def sweep(df, rec) -> str:
    valid = df[df["valid"]]
    row = rec["row"]
    share = rec.get("backfill_share_of_bound")
    return "\n\n".join([
        f"**Fixed schedule: config #{rec['config_id']}** of {len(df)} ({int(valid['starved'].sum())} of "
        f"{len(valid)} valid configs starve a task).",
        f"Change: {', '.join(f'{k} = {v}' for k, v in rec['overrides'].items()) or 'none'}.",
        f"Predicted: steady-state live p95 {_h(row.get('steady_p95_s'))}, backfill "
        f"{row.get('backfill_per_day', float('nan')):.0f} deals/day"
        + (f" ({100 * share:.0f}% of what the refill leaves after live demand)." if share is not None else "."),
        f"Rule: {rec['rule']}."])


def run(result) -> str:
    s = result.summary() if hasattr(result, "summary") else result
    where = "the embedded fake Keepa" if s.get("embedded_fake_keepa") else s.get("keepa_url")
    stored = s.get("stored", {})
    waits = ", ".join(f"{t} {_h(v.get('max_wait_s'))}" for t, v in sorted(s.get("tasks", {}).items()))
    return "\n\n".join([
        f"**Ran the fixed schedule for {_h(s.get('keepa_seconds'))} of Keepa time against {where}.**",
        f"Stored: {stored.get('live', {}).get('deals', 0)} live deals, {stored.get('backfill', {}).get('deals', 0)} "
        f"backfill deals; every deal written once: "
        f"{all(v.get('deals') == v.get('writes') for v in stored.values())}.",
        f"Longest wait per task: {waits or 'none'}. Faults survived: {s.get('faults', 0)}."])
