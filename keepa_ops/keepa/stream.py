"""Keepa's deal list as a pure function of the workload: the one deal stream of every Keepa we imitate.

The simulated Keepa and the embedded fake server both serve this stream, so a deal has
the same ASIN, the same ``lastUpdate`` and the same place on a page in a simulation and
in a live run against the fake.

Invariants:
* live deal ``i`` is published at ``published_at(i)`` (unix seconds), non-decreasing in
  ``i``: the ``pending`` deals already there at the start are spread over the hour before
  it, then ``arrivals`` (seconds since the start) or one deal every ``3600 / per_hour`` s;
* a live page lists deals published in the last 12 hours, newest first, at most 10,000 in
  all, 150 per page; neighbours are sometimes swapped (Keepa's "newest first" is not strict);
* the backlog is ``backlog`` older deals, 150 per page, oldest first; it stands for the
  history a backfill pages through across date windows, so it is not capped at 10,000;
* a product has ``offers_of(asin)`` offers: ``offers`` for every product if set, else a
  fixed hash of the ASIN in 5..35. Keepa's price for ``offers=N`` depends on it.
"""
from __future__ import annotations

import bisect
import hashlib
import math

from .wire import PAGE_SIZE, unix_to_keepa_minutes

MAX_RESULTS = 10_000      # /deal returns at most this many deals in all
WINDOW_S = 12 * 3600      # /deal only lists products updated in the last 12 hours
BACKLOG_BASE = 1_000_000_000  # backlog deal j is deal number BACKLOG_BASE + j
_ASIN_MULT = 2654435761   # odd and not a multiple of 3: a bijection modulo 36**8
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


_B36_PAIRS = tuple(a + b for a in _B36 for b in _B36)  # n in 0..1295 -> its two base-36 digits


def asin_of(idx: int, seed: int) -> str:
    """``"B0"`` and eight base-36 digits of a bijection of ``idx``: distinct deals, distinct ASINs."""
    n = (idx * _ASIN_MULT + seed) % 36 ** 8
    hi, lo = divmod(n, 1296 ** 2)
    p = _B36_PAIRS
    return "B0" + p[hi // 1296] + p[hi % 1296] + p[lo // 1296] + p[lo % 1296]


def stable_hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


class DealStream:
    """The deals a Keepa key sees: live ones as the clock advances, and the backlog."""

    def __init__(self, *, start_unix: float, pending: int = 0, per_hour: float = 0.0,
                 arrivals: tuple[float, ...] | None = None, backlog: int = 0, seed: int = 7,
                 offers: int | None = None):
        self.start_unix = float(start_unix)
        self.pending = int(pending)
        self.per_hour = float(per_hour)
        self.arrivals = tuple(arrivals) if arrivals is not None else None
        self.backlog = int(backlog)
        self.seed = seed
        self.offers = offers
        self._swapped = bytearray()          # memos of pure functions: deal number -> swapped,
        self._offers: dict[str, int] = {}    # ASIN -> offers
        self._window = (math.inf, -math.inf, (0, 0))  # (since, until, live_window) for now in [since, until)

    @classmethod
    def from_workload(cls, workload, start_unix: float, seed: int = 7) -> "DealStream":
        return cls(start_unix=start_unix, pending=workload.pending_new_deals, per_hour=workload.new_deals_per_hour,
                   arrivals=workload.arrivals, backlog=workload.backlog, seed=seed,
                   offers=workload.offers_per_product)

    # -- live deals ------------------------------------------------------------------
    def published_at(self, i: int) -> float:
        """Unix time at which live deal ``i`` appears (its ``lastUpdate``)."""
        if i < self.pending:
            return self.start_unix - (self.pending - i) * 3600.0 / self.pending
        k = i - self.pending
        if self.arrivals is not None:
            return self.start_unix + self.arrivals[k] if k < len(self.arrivals) else math.inf
        if self.per_hour <= 0:
            return math.inf
        return self.start_unix + (k + 1) * 3600.0 / self.per_hour

    def published_count(self, now: float) -> int:
        """How many live deals are published at unix time ``now``."""
        if now < self.start_unix:
            return bisect.bisect_right([self.published_at(i) for i in range(self.pending)], now)
        dt = now - self.start_unix
        if self.arrivals is not None:
            return self.pending + bisect.bisect_right(self.arrivals, dt)
        if self.per_hour <= 0:
            return self.pending
        return self.pending + math.floor(dt * self.per_hour / 3600.0 + 1e-9)

    def _first_in_window(self, n: int, now: float) -> int:
        """The oldest of the first ``n`` live deals still inside the 12-hour window."""
        lo, hi, edge = 0, n, now - WINDOW_S
        while lo < hi:
            mid = (lo + hi) // 2
            if self.published_at(mid) > edge:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def live_window(self, now: float) -> tuple[int, int]:
        """``(n, oldest)``: the live list at unix time ``now`` is deals ``oldest .. n - 1``.

        The list, and so every page of it, is a pure function of this pair: a caller may keep
        a page while the window it was cut from is unchanged.
        """
        since, until, window = self._window
        if since <= now < until:
            return window
        n = self.published_count(now)
        oldest = max(self._first_in_window(n, now), n - MAX_RESULTS)
        # The window holds until the next deal is published or its oldest deal leaves the 12 hours.
        until = min(self.published_at(n), self.published_at(oldest) + WINDOW_S if oldest < n else math.inf)
        self._window = (now, until, (n, oldest))
        return n, oldest

    def live_page(self, page: int, now: float) -> list[int]:
        """Deal numbers on live page ``page`` at unix time ``now``, in the order Keepa lists them."""
        return self.window_page(page, *self.live_window(now))

    def window_page(self, page: int, n: int, oldest: int) -> list[int]:
        """Deal numbers on page ``page`` of the live list ``oldest .. n - 1`` (see ``live_window``)."""
        top = n - 1 - page * PAGE_SIZE
        chunk = list(range(top, max(oldest, top - PAGE_SIZE + 1) - 1, -1))
        if len(chunk) > 1:
            swapped = self._swaps_through(top)
            for k in range(0, len(chunk) - 1, 2):
                if swapped[chunk[k]]:
                    chunk[k], chunk[k + 1] = chunk[k + 1], chunk[k]
        return chunk

    def _swaps_through(self, i: int) -> bytearray:
        """Whether each live deal up to ``i`` trades places with the next one down (a pure function, kept)."""
        swapped = self._swapped
        for j in range(len(swapped), i + 1):
            swapped.append(stable_hash(self.seed, "swap", j) % 3 == 0)
        return swapped

    def asin(self, i: int) -> str:
        return asin_of(i, self.seed)

    def last_update(self, i: int) -> int:
        """Live deal ``i``'s ``lastUpdate`` in Keepa minutes."""
        return unix_to_keepa_minutes(self.published_at(i))

    # -- the backlog ---------------------------------------------------------------------
    def backlog_page(self, page: int) -> range:
        """Backlog positions on page ``page`` (oldest first)."""
        lo = page * PAGE_SIZE
        return range(lo, max(lo, min(self.backlog, lo + PAGE_SIZE)))

    def backlog_asin(self, j: int) -> str:
        return asin_of(BACKLOG_BASE + j, self.seed)

    def backlog_published_at(self, j: int) -> float:
        return self.start_unix - 30 * 86400 + j * 60.0

    def backlog_last_update(self, j: int) -> int:
        return unix_to_keepa_minutes(self.backlog_published_at(j))

    # -- products ------------------------------------------------------------------------
    def offers_of(self, asin: str) -> int:
        if self.offers is not None:
            return self.offers
        n = self._offers.get(asin)
        if n is None:
            n = self._offers[asin] = 5 + stable_hash(self.seed, "offers", asin) % 31
        return n
