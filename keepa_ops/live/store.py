"""The SQLite deals store.

Invariants:
* ``deals`` is keyed by ASIN and an upsert is idempotent: writing the same deal
  again updates its row, never adds one (``writes`` counts how often it was written);
* the Upserter's watermark and the Backfiller's checkpoint move in the same
  transaction as the rows they cover: after any crash, watermark <= stored rows;
* WAL journal, so a notebook can read while the runner writes.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import time
from pathlib import Path

from ..errors import KeepaOpsError
from ..keepa.wire import DealRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS deals (
    asin TEXT PRIMARY KEY,
    title TEXT,
    deal_last_update INTEGER,      -- Keepa minutes, from the deal list
    product_last_update INTEGER,   -- Keepa minutes, from /product
    price INTEGER,                 -- cents, -1 = none
    source TEXT NOT NULL,          -- 'live' or 'backfill'
    first_stored REAL NOT NULL,    -- unix seconds (server clock)
    last_stored REAL NOT NULL,
    writes INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS watermarks (
    task TEXT PRIMARY KEY, last_update REAL NOT NULL, asin TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    task TEXT PRIMARY KEY, page INTEGER NOT NULL, "offset" INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, task TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    outcome TEXT, items INTEGER);
"""

UPSERT = """
INSERT INTO deals (asin, title, deal_last_update, product_last_update, price, source, first_stored, last_stored)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(asin) DO UPDATE SET
    title = excluded.title, deal_last_update = excluded.deal_last_update,
    product_last_update = excluded.product_last_update, price = excluded.price,
    last_stored = excluded.last_stored, writes = deals.writes + 1
"""


class TaskTaken(KeepaOpsError):
    """A second runner of the same task on one deals store: both would fetch, pay for and write every deal."""


APPLICATION_ID = 0x4B45504F  # "KEPO" in the SQLite header: this file is a keepa-ops deals store
OUR_TABLES = {"deals", "watermarks", "checkpoints", "runs"}


class StoreFailed(KeepaOpsError):
    """A commit failed and was rolled back whole (rows and watermark or checkpoint together)."""


class StoreRefused(KeepaOpsError):
    """The ``--db`` path is not a keepa-ops deals store and cannot become one; nothing was changed."""


def _check_ours(path: Path) -> None:
    """Refuse, without writing a byte, any path that is not empty and not a keepa-ops store."""
    if path.is_dir():
        raise StoreRefused(f"--db {path}: is a directory. Fix: give a file path, e.g. {path / 'deals.sqlite'}")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            app = con.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreRefused(f"--db {path}: not a SQLite database ({e}); it was left unchanged. "
                           "Fix: give a new file path, or restore the file from a backup") from None
    # a store from before the application id has exactly our tables
    if app != APPLICATION_ID and not (app == 0 and tables and tables <= OUR_TABLES | {"sqlite_sequence"}
                                      and "deals" in tables):
        raise StoreRefused(f"--db {path}: a SQLite file that is not a keepa-ops deals store "
                           f"(tables: {', '.join(sorted(tables)) or 'none'}); it was left unchanged. "
                           "Fix: give a new file path")


class DealStore:
    def __init__(self, path, now_fn=time.time):
        self.path = Path(path)
        _check_ours(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                        timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a process crash
            self.conn.executescript(SCHEMA)
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except (sqlite3.Error, OSError) as e:
            raise StoreRefused(f"--db {self.path}: cannot be opened as a deals store ({e}). "
                               "Fix: give a writable file path") from None
        self.now_fn = now_fn
        self._open_runs: dict[str, int] = {}
        self._claims: dict = {}

    def close(self):
        for fh in self._claims.values():
            fh.close()
        self._claims.clear()
        self.conn.close()

    def claim(self, tasks) -> None:
        """Be the only runner of ``tasks`` on this store, or raise ``TaskTaken`` naming the other one.

        A claim is an OS lock on ``<db>.<task>.lock``: it ends with this process however the
        process ends (a kill -9 included), so a crashed runner never blocks its restart.
        """
        for task in tasks:
            path = self.path.with_name(f"{self.path.name}.{task}.lock")
            fh = open(path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise TaskTaken(f"{self.path}: task {task!r} already has a runner ({holder}). Fix: stop it, "
                                f"or run the other tasks with --task, or use another --db") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
            fh.flush()
            self._claims[task] = fh

    # -- reads ------------------------------------------------------------------------
    def watermark(self, task: str) -> DealRef | None:
        row = self.conn.execute("SELECT last_update, asin FROM watermarks WHERE task = ?", (task,)).fetchone()
        return DealRef(row[0], row[1]) if row else None

    def checkpoint(self, task: str) -> tuple[int, int] | None:
        row = self.conn.execute('SELECT page, "offset" FROM checkpoints WHERE task = ?', (task,)).fetchone()
        return (row[0], row[1]) if row else None

    def has(self, ref: DealRef) -> bool:
        return self.conn.execute("SELECT 1 FROM deals WHERE asin = ? AND deal_last_update = ?",
                                 (ref.asin, ref.last_update)).fetchone() is not None

    def counts(self) -> dict:
        rows = self.conn.execute("SELECT source, COUNT(*), SUM(writes) FROM deals GROUP BY source").fetchall()
        return {src: {"deals": n, "writes": w} for src, n, w in rows}

    # -- writes -----------------------------------------------------------------------
    def _rows(self, rows, refs, source, now):
        by_asin = {r["asin"]: r for r in rows if type(r) is dict and "asin" in r}
        empty = {}
        out = []
        for ref in refs:
            p = by_asin.get(ref.asin, empty)
            out.append((ref.asin, p.get("title"), int(ref.last_update), p.get("lastUpdate"),
                        p.get("price", -1), source, now, now))
        return out

    def commit_new(self, task, rows, refs, watermark: DealRef, now=None):
        """Upsert live deals and move the Upserter's watermark, in one transaction."""
        self._commit(rows, refs, "live",
                     "INSERT INTO watermarks (task, last_update, asin, updated) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(task) DO UPDATE SET last_update = excluded.last_update, asin = excluded.asin, "
                     "updated = excluded.updated", (task, watermark.last_update, watermark.asin))

    def commit_backfill(self, task, rows, refs, checkpoint, now=None):
        """Upsert backfilled deals and move the Backfiller's checkpoint, in one transaction."""
        self._commit(rows, refs, "backfill",
                     'INSERT INTO checkpoints (task, page, "offset", updated) VALUES (?, ?, ?, ?) '
                     'ON CONFLICT(task) DO UPDATE SET page = excluded.page, "offset" = excluded."offset", '
                     "updated = excluded.updated", (task, checkpoint[0], checkpoint[1]))

    def _commit(self, rows, refs, source, position_sql, position):
        ts = self.now_fn()
        try:
            with self._tx():
                self.conn.executemany(UPSERT, self._rows(rows, refs, source, ts))
                self.conn.execute(position_sql, (*position, ts))
        except sqlite3.Error as e:  # a full disk, a file gone read-only: the batch rolled back, whole
            raise StoreFailed(f"--db {self.path}: could not store a batch of {len(refs)} deals ({e}); it was rolled "
                              "back, with its watermark or checkpoint, so a restart fetches it again. "
                              "Fix: free disk space or make the file writable, then run again") from None

    def run_started(self, task: str) -> None:
        cur = self.conn.execute("INSERT INTO runs (task, started) VALUES (?, ?)", (task, self.now_fn()))
        self._open_runs[task] = cur.lastrowid

    def run_finished(self, task: str, outcome: str, items: int) -> None:
        rid = self._open_runs.pop(task, None)
        if rid is not None:
            self.conn.execute("UPDATE runs SET finished = ?, outcome = ?, items = ? WHERE id = ?",
                              (self.now_fn(), outcome, items, rid))

    def _tx(self):
        return _Transaction(self.conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return False
            except sqlite3.Error:
                self.conn.execute("ROLLBACK")
                raise
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        return False
