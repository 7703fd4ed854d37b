"""Who starved whom, why, and what to change: a verdict from parsed token events.

Three steps, one module each: ``evidence`` measures (runs and their waits, saved work,
the refill rate and where it came from, Keepa's balance, stalls), ``verdicts`` decides
(one rule per verdict, its definition in its docstring), ``recommend`` proposes a change
and replays it on the demand the log shows (``demand``) before offering it.

Verdicts, in the order they are tried: ``insufficient_evidence``, ``stall``,
``unreachable_target``, ``deficit_spiral``, ``livelock``, ``starvation``, ``healthy``.

It works on the events DataFrame, so it never imports ``logs``; ``replay`` re-runs a
rebuilt config through ``simulation``. It may import ``simulation``, ``config``, ``core``
and below.
"""
from __future__ import annotations

from .evidence import Evidence, gather
from .recommend import recommend
from .report import Diagnosis
from .verdicts import VERDICTS, decide
from .waits import wait_intervals


def diagnose(parsed, bound_s: float = 3600.0, check: bool = True) -> Diagnosis:
    """Diagnose a ``ParsedLog``, its events DataFrame, or ``Evidence`` already gathered."""
    if isinstance(parsed, Evidence):
        evidence = parsed
    else:
        evidence = gather(parsed.events if hasattr(parsed, "events") else parsed, bound_s)
    finding, why_not = decide(evidence, bound_s)
    rec = recommend(evidence, finding, bound_s, check)
    evidence_lines = list(finding.evidence) + [f"attribution: {s}" for s in evidence.attribution["inferred"]]
    amb = evidence.attribution["ambiguous_lines"]
    if amb:
        evidence_lines.append(f"attribution: {amb} token lines could belong to more than one open run and were "
                              f"left out.")
    return Diagnosis(finding.verdict, finding.starved, finding.culprit, evidence.stalled, evidence.rate,
                     f"{evidence.rate_source}: {evidence.rate_how}", evidence.tasks, evidence_lines, why_not, rec,
                     evidence.attribution, evidence.waits)


__all__ = ["Diagnosis", "Evidence", "VERDICTS", "diagnose", "gather", "recommend", "wait_intervals"]
