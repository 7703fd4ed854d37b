"""A diagnosis: the verdict, the evidence behind it, why no other verdict holds, and the fix."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Diagnosis:
    verdict: str
    starved: list[str]
    culprit: str | None
    stalled: list[dict]
    refill_per_minute: float | None
    refill_source: str
    tasks: dict
    evidence: list[str]
    why_not: dict
    recommendation: dict
    attribution: dict = field(default_factory=dict)
    waits: pd.DataFrame = field(repr=False, default=None)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "starved": self.starved, "culprit": self.culprit,
                "stalled": [{k: (str(v) if isinstance(v, pd.Timestamp) else v) for k, v in s.items()}
                            for s in self.stalled],
                "refill_per_minute": self.refill_per_minute, "refill_source": self.refill_source,
                "tasks": self.tasks, "evidence": self.evidence, "why_not": self.why_not,
                "recommendation": self.recommendation, "attribution": self.attribution}

    def report(self) -> str:
        lines = [f"verdict: {self.verdict}"]
        if self.starved:
            lines.append(f"starved: {', '.join(self.starved)}" + (f" (by {self.culprit})" if self.culprit else ""))
        for s in self.stalled:
            lines.append(f"stalled: {s['task']} since {s['since']} ({s['how']})")
        if self.refill_per_minute:
            lines.append(f"refill: {self.refill_per_minute:g} tokens/min, from {self.refill_source} "
                         f"(bucket holds {60 * self.refill_per_minute:g})")
        else:
            lines.append("refill: unknown")
        for name, t in self.tasks.items():
            tgt = "?" if t["target"] is None else f"{t['target']:g}"
            lines.append(f"  {name:24} target {tgt:>6}  waits {t['waits']:>4}  "
                         f"longest {t['max_wait_s'] / 3600:6.2f} h  "
                         f"grants {t['grants']:>5}  tokens {t['tokens']:>9,.0f}  saved {t['saved']:>5}  "
                         f"gave up {t['aborts']}")
        lines.append("evidence:")
        lines += [f"  - {e}" for e in self.evidence]
        if self.why_not:
            lines.append("why not:")
            lines += [f"  - {k}: {v}" for k, v in self.why_not.items()]
        rec = self.recommendation
        lines.append(f"recommendation: {rec.get('summary', 'none')}")
        for item in rec.get("legacy", []) if rec.get("offered") else []:
            lines.append(f"  in the legacy pipeline's terms: {item}")
        p = rec.get("predicted")
        if p and rec.get("offered"):
            lines.append(f"  checked by simulation over {p['hours']:g} h of the rebuilt demand: starved "
                         f"{p['starved'] or 'nobody'}; " + "; ".join(
                             f"{n} longest wait {v['max_wait_s'] / 3600:.2f} h, {v['grants']} grants"
                             for n, v in p["tasks"].items()))
        return "\n".join(lines)
