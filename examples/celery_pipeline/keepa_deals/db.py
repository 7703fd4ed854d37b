"""The pipeline's SQLite store: deals, the Upserter's watermark and the Backfiller's checkpoint.

A batch's rows and the watermark (or checkpoint) it advances commit in one transaction, and an
upsert of a deal already stored changes nothing, so a retried or repeated run stores every deal once.
"""
import os
import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS deals (asin TEXT PRIMARY KEY, task TEXT NOT NULL, last_update INTEGER NOT NULL,
                                  stored_at REAL NOT NULL, price INTEGER);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def connect() -> sqlite3.Connection:
    c = sqlite3.connect(os.environ["KEEPA_DEALS_DB"], timeout=30, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.executescript(SCHEMA)
    return c


def get(c, name: str, default: str | None = None) -> str | None:
    row = c.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
    return row[0] if row else default


def store(c, task: str, rows: list, stored_at: float, state: dict) -> int:
    """Insert ``rows`` (asin, last_update, price) not stored yet and set ``state``, in one transaction."""
    c.execute("BEGIN IMMEDIATE")
    try:
        n = 0
        for asin, last_update, price in rows:
            n += c.execute("INSERT OR IGNORE INTO deals VALUES (?, ?, ?, ?, ?)",
                           (asin, task, last_update, stored_at, price)).rowcount
        for k, v in state.items():
            c.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (k, str(v)))
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    return n
