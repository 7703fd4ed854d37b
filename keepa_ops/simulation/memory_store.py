"""The deals store for simulation: the SQLite store's meaning, in memory, counting every write.

Invariants (the same as ``live.store.DealStore``, checked by the store contract tests):
* a deal is keyed by ASIN; writing it again updates it (its ``lastUpdate``) and counts
  a write, never a second deal;
* ``has(ref)`` means "this ASIN is stored with this lastUpdate";
* a watermark or checkpoint moves in the same call as the rows it covers.
"""
from __future__ import annotations


class MemoryStore:
    def __init__(self):
        self.watermarks: dict = {}
        self.checkpoints: dict[str, tuple[int, int]] = {}
        self.last_update: dict[str, float] = {}  # asin -> lastUpdate of its last write
        self.first_stored: dict[str, float] = {}  # asin -> engine time of its first write
        self.source: dict[str, str] = {}          # asin -> 'live' or 'backfill' (its first write)
        self.writes: dict[str, int] = {}          # asin -> times written

    def watermark(self, task: str):
        return self.watermarks.get(task)

    def checkpoint(self, task: str):
        return self.checkpoints.get(task)

    def has(self, ref) -> bool:
        return self.last_update.get(ref.asin) == ref.last_update

    def counts(self) -> dict:
        out: dict[str, dict] = {}
        for a, n in self.writes.items():
            c = out.setdefault(self.source[a], {"deals": 0, "writes": 0})
            c["deals"] += 1
            c["writes"] += n
        return out

    def _put(self, refs, source: str, now: float) -> None:
        lu, writes, first = self.last_update, self.writes, self.first_stored
        for ref in refs:
            a = ref.asin
            lu[a] = ref.last_update
            writes[a] = writes.get(a, 0) + 1
            if a not in first:
                first[a] = now
                self.source[a] = source

    def commit_new(self, task, rows, refs, watermark, now):
        self._put(refs, "live", now)
        self.watermarks[task] = watermark

    def commit_backfill(self, task, rows, refs, checkpoint, now):
        self._put(refs, "backfill", now)
        self.checkpoints[task] = checkpoint
