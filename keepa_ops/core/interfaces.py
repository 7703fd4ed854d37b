"""What the engine drives, as ``typing.Protocol`` classes: a Clock, a Transport, a Store.

The engine and the tasks touch nothing else of these three, so a simulation and a live run
differ only in which implementations they are handed:

=========  ===================================  ===========================================
Protocol   in simulation                        live
=========  ===================================  ===========================================
Clock      ``core.clock.VirtualClock``          ``core.clock.RealClock``
Transport  ``simulation.keepa.SimulatedKeepa``  ``live.transport.HttpTransport``
Store      ``simulation.memory_store``          ``live.store.DealStore`` (SQLite)
=========  ===================================  ===========================================

The contract tests (``tests/test_contracts.py``) hold each pair to the same answers; these
classes say what the answers are about, and the same tests check that every
implementation has every member its Protocol names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..keepa.wire import DealRef, Response


@runtime_checkable
class Clock(Protocol):
    """Seconds since the run started. ``now()`` never goes backwards."""

    def now(self) -> float:
        """The current time."""

    def sleep_until(self, t: float) -> None:
        """Return at ``t`` or later; only the engine calls it. May return early after ``stop()``."""

    def stop(self) -> None:
        """Wake any sleeper at once (safe from a signal handler)."""


@runtime_checkable
class Transport(Protocol):
    """Keepa, as the tasks call it. Keepa decides what a call costs: no method takes a cost.

    Every answer carries Keepa's envelope; a call refused for want of tokens raises
    ``errors.NotEnoughTokens`` with the envelope, and is charged nothing.
    """

    def deal_page(self, page: int, backlog: bool) -> Response:
        """One /deal page: the live list (newest first) or the backlog (oldest first), as ``DealRef`` items."""

    def products(self, asins: list[str], params: dict | None = None) -> Response:
        """One /product call for ``asins`` with ``params`` (``None``: the transport's configured ones)."""


@runtime_checkable
class Store(Protocol):
    """Where deals, watermarks and checkpoints live. A deal is keyed by ASIN.

    A commit stores its rows and moves the task's watermark or checkpoint at once: after a
    crash either both happened or neither did.
    """

    def watermark(self, task: str) -> DealRef | None:
        """The newest ``(last_update, asin)`` the Upserter has committed, or None before its first commit."""

    def checkpoint(self, task: str) -> tuple[int, int] | None:
        """``(page, offset)`` where the Backfiller resumes, or None before its first commit."""

    def has(self, ref: DealRef) -> bool:
        """Whether this ASIN is stored with this ``last_update``."""

    def counts(self) -> dict:
        """``{source: {"deals": n, "writes": m}}`` for ``live`` and ``backfill``."""

    def commit_new(self, task: str, rows: list, refs: list[DealRef], watermark: DealRef, now: float) -> None:
        """Upsert the Upserter's ``rows`` for ``refs`` and move its watermark, in one transaction."""

    def commit_backfill(self, task: str, rows: list, refs: list[DealRef], checkpoint: tuple[int, int],
                        now: float) -> None:
        """Upsert the Backfiller's ``rows`` for ``refs`` and move its checkpoint, in one transaction."""
