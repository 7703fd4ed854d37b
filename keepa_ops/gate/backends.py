"""Where a shared bucket's state lives: in this process, in an SQLite file, or in Redis.

All three run the same ledger (``ledger.py``; ``ledger.lua`` in Redis) atomically on one
small state and answer the same operations. ``init`` is the state to create when
there is none yet: a new file, a flushed or restarted Redis.

Invariants: one operation is one atomic step (a lock; one ``BEGIN IMMEDIATE``
transaction; one Lua script); the time is the backend's own (``time.monotonic`` in this
process; SQLite's ``julianday('now')``; Redis ``TIME``), never a client's wall clock.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from importlib import resources
from pathlib import Path

from ..errors import KeepaOpsError
from . import ledger

US = 1_000_000


class GateUnavailable(KeepaOpsError):
    """The shared bucket cannot be reached; nothing is admitted (the gate fails closed)."""


class _Ops:
    """The operations, over ``_apply(fn, *args)`` which each backend makes atomic."""

    def enqueue(self, init, task, cost_mt, target_mt, priority, weight):
        return self._apply(init, ledger.enqueue, task, cost_mt, target_mt, priority, weight)

    def poll(self, init, wid, lease_us):
        return self._apply(init, ledger.poll, wid, lease_us)

    def ask(self, init, task, cost_mt, target_mt, priority, weight, lease_us, resume=""):
        return self._apply(init, ledger.ask, task, cost_mt, target_mt, priority, weight, lease_us, resume)

    def park(self, init, wid, away_us):
        return self._apply(init, ledger.park, wid, away_us)

    def settle(self, init, lid, tokens_left_mt, consumed_mt, timestamp_ms, rate_mt, refill_in_us):
        return self._apply(init, ledger.settle, lid, tokens_left_mt, consumed_mt, timestamp_ms, rate_mt,
                           refill_in_us)

    def release(self, init, lid):
        return self._apply(init, ledger.release, lid)

    def withdraw(self, init, wid):
        return self._apply(init, ledger.withdraw, wid)

    def state(self, init) -> dict:
        """``{"bal", "waiters", "leases"}`` brought forward to now (for tests and status lines)."""
        def _counts(s, now):
            ledger.refill(s, now)
            ledger.expire(s, now)
            return {"bal": s["bal"], "waiters": len(s["waiters"]), "leases": len(s["leases"])}
        return self._apply(init, _counts)


def _created(init: dict, epoch_s: float, now_us: int) -> dict:
    s = json.loads(json.dumps(init))
    s["epoch_s"], s["at"] = epoch_s, now_us
    return s


class MemoryBackend(_Ops):
    """One process's bucket (threads share it): the state in a dict under a lock."""

    url = "memory://"

    def __init__(self):
        self._lock = threading.Lock()
        self._s: dict | None = None
        self._epoch = time.monotonic()

    def _apply(self, init, fn, *args):
        with self._lock:
            now_s = time.monotonic() - self._epoch
            if self._s is None:
                self._s = _created(init, 0.0, 0)
            s = self._s
            return fn(s, int(now_s * US * s["scale"]), *args)

    def close(self):
        pass


class SQLiteBackend(_Ops):
    """Processes on one host: the state as one JSON row, each operation one ``BEGIN IMMEDIATE``."""

    def __init__(self, path, name: str = "keepa"):
        self.path = Path(path)
        self.name = name
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS keepa_ops_gate (name TEXT PRIMARY KEY, state TEXT NOT NULL)")
        except sqlite3.Error as e:
            raise GateUnavailable(f"{self.url}: cannot open the bucket file ({e}). "
                                  "Fix: give --bucket a writable path, e.g. sqlite:///runs/bucket.db") from None
        self._lock = threading.Lock()

    def _apply(self, init, fn, *args):
        with self._lock:
            c = self.conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    now_s = c.execute("SELECT (julianday('now') - 2440587.5) * 86400.0").fetchone()[0]
                    row = c.execute("SELECT state FROM keepa_ops_gate WHERE name = ?", (self.name,)).fetchone()
                    if row is None:
                        s = _created(init, now_s, 0)
                    else:
                        s = json.loads(row[0])
                    out = fn(s, int((now_s - s["epoch_s"]) * US * s["scale"]), *args)
                    c.execute("INSERT OR REPLACE INTO keepa_ops_gate (name, state) VALUES (?, ?)",
                              (self.name, json.dumps(s, separators=(",", ":"))))
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise GateUnavailable(f"{self.url}: the bucket file failed ({e}).") from None
            return out

    def close(self):
        self.conn.close()


class RedisBackend(_Ops):
    """Several hosts: the state in one Redis key, each operation one Lua script."""

    def __init__(self, url: str, name: str = "keepa"):
        try:
            import redis
        except ImportError:
            raise GateUnavailable("redis:// buckets need redis-py. Fix: pip install 'keepa-ops[redis]'") from None
        self._redis_errors = (redis.ConnectionError, redis.TimeoutError)
        self._response_error = redis.ResponseError
        self._no_script = redis.exceptions.NoScriptError
        self.url = url
        self.key = f"keepa_ops:gate:{name}"
        self.client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._source = resources.files(__package__).joinpath("ledger.lua").read_text()
        self._sha = hashlib.sha1(self._source.encode()).hexdigest()
        # One connection of our own, commands sent and read directly: half the client's cost of a
        # script call through the pool. It reconnects on the next call after a failure.
        self._conn = self.client.connection_pool.make_connection()
        self._lock = threading.Lock()

    def _script(self, keys, args):
        conn = self._conn
        with self._lock:
            try:
                try:
                    conn.send_command("EVALSHA", self._sha, len(keys), *keys, *args)
                    return conn.read_response()
                except self._no_script:  # a new or restarted Redis: load the ledger, then ask again
                    conn.send_command("SCRIPT", "LOAD", self._source)
                    conn.read_response()
                    conn.send_command("EVALSHA", self._sha, len(keys), *keys, *args)
                    return conn.read_response()
            except self._redis_errors:
                conn.disconnect()
                raise

    def _call(self, init, op, *args):
        try:
            kind, a, bal, _fresh, wid = self._script(keys=[self.key], args=[op, "", *args])
            if kind == b"missing":  # a new, flushed or restarted Redis: send the state to start from
                kind, a, bal, _fresh, wid = self._script(keys=[self.key], args=[op, json.dumps(init), *args])
        except self._redis_errors as e:
            raise GateUnavailable(f"{_redacted(self.url)}: Redis is unreachable ({type(e).__name__}). Nothing is "
                                  "admitted while it is. Fix: start Redis, or set ?fallback=local&processes=N "
                                  "to share the refill locally") from None
        except self._response_error as e:
            raise GateUnavailable(f"{_redacted(self.url)}: Redis refused the gate's script ({e}).") from None
        return kind.decode(), a.decode(), int(float(bal)), wid.decode()

    def enqueue(self, init, task, cost_mt, target_mt, priority, weight):
        return self._call(init, "enqueue", task, cost_mt, target_mt, priority, weight)[1]

    def poll(self, init, wid, lease_us):
        kind, a, bal, _ = self._call(init, "poll", wid, lease_us)
        return (kind, a if kind == "granted" else int(float(a)), bal)

    def ask(self, init, task, cost_mt, target_mt, priority, weight, lease_us, resume=""):
        kind, a, bal, wid = self._call(init, "ask", task, cost_mt, target_mt, priority, weight, lease_us, resume)
        return (kind, a if kind == "granted" else int(float(a)), bal, wid)

    def park(self, init, wid, away_us):
        kind, a, bal, _ = self._call(init, "park", wid, away_us)
        return (kind, int(float(a)), bal)

    def settle(self, init, lid, tokens_left_mt, consumed_mt, timestamp_ms, rate_mt, refill_in_us):
        return self._call(init, "settle", lid or "", tokens_left_mt, consumed_mt, timestamp_ms, rate_mt,
                          refill_in_us)[2]

    def release(self, init, lid):
        return self._call(init, "release", lid)[2]

    def withdraw(self, init, wid):
        self._call(init, "withdraw", wid)

    def state(self, init) -> dict:
        kind, counts, bal, _ = self._call(init, "state")
        n = int(float(counts))
        return {"bal": bal, "waiters": n // 1_000_000, "leases": n % 1_000_000}

    def close(self):
        self._conn.disconnect()
        self.client.close()


def _redacted(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
