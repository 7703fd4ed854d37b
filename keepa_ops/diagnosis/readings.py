"""Two readings of a parsed event frame that the parser, the diagnosis and the figures share.

* the observed balance of a line is Keepa's ``tokensLeft`` where the line carries it, else
  the balance the pipeline logged (its own estimate);
* a task's target is the most common target of its waits (ties: the smallest), because a
  target a task waits for once (a short last batch) says less than the one it waits for
  every run.
"""
from __future__ import annotations

import pandas as pd

WAITING_EVENTS = ("wait", "heartbeat", "abort")  # the events whose ``target`` a task was waiting for


def observed_balance(events: pd.DataFrame) -> pd.Series:
    """Per row: Keepa's ``tokens_left`` if the row has it, else its logged ``balance`` (NaN if neither)."""
    return events["tokens_left"].where(events["tokens_left"].notna(), events["balance"])


def usual_target(targets: pd.Series) -> float | None:
    """The most common of ``targets`` (NaN ignored; ties: the smallest), or None if there is none."""
    t = targets.dropna()
    return float(t.mode().iloc[0]) if len(t) else None


def waited_target(task_events: pd.DataFrame) -> float | None:
    """A task's usual target, from its own wait, heartbeat and abort rows."""
    return usual_target(task_events.loc[task_events["event"].isin(WAITING_EVENTS), "target"])
