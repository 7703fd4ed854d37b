"""Issue #3 goal: upserts into the deals store at >= 50,000 deals/s and >= 0.8 of raw sqlite3.

Baseline, same run, same rows: raw ``sqlite3`` ``executemany`` of prebuilt tuples
into an identical table, one transaction per batch. Ours: ``DealStore.commit_new``
from Keepa product dicts, rows plus watermark in one transaction per batch.
"""
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from keepa_ops.live.store import SCHEMA, UPSERT, DealStore  # noqa: E402
from keepa_ops.keepa.wire import DealRef  # noqa: E402

N = 200_000


def data(n):
    refs = [DealRef(8_000_000 + i // 7, f"B0{i:08d}") for i in range(n)]
    rows = [{"asin": r.asin, "title": f"Product {r.asin}", "lastUpdate": 8_000_000 + i, "price": 1000 + i % 5000}
            for i, r in enumerate(refs)]
    return refs, rows


def ours(path, refs, rows, batch):
    st = DealStore(path, now_fn=lambda: 1.0)
    t = time.perf_counter()
    for i in range(0, len(refs), batch):
        st.commit_new("up", rows[i:i + batch], refs[i:i + batch], refs[i + batch - 1] if i + batch <= len(refs) else refs[-1])
    dt = time.perf_counter() - t
    st.close()
    return dt


def raw(path, refs, rows, batch):
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(SCHEMA)
    tuples = [(r.asin, p["title"], int(r.last_update), p["lastUpdate"], p["price"], "live", 1.0, 1.0)
              for r, p in zip(refs, rows)]
    t = time.perf_counter()
    for i in range(0, len(tuples), batch):
        con.execute("BEGIN")
        con.executemany(UPSERT, tuples[i:i + batch])
        con.execute("COMMIT")
    dt = time.perf_counter() - t
    con.close()
    return dt


def main():
    refs, rows = data(N)
    for batch in (10, 150, 1000):
        best_o = best_r = float("inf")
        for _ in range(5):
            with tempfile.TemporaryDirectory() as d:
                best_r = min(best_r, raw(Path(d) / "raw.sqlite", refs, rows, batch))
                best_o = min(best_o, ours(Path(d) / "ours.sqlite", refs, rows, batch))
        rate, rate_raw = N / best_o, N / best_r
        print(f"batch {batch:>5}: DealStore {rate:,.0f} deals/s, raw sqlite3 executemany {rate_raw:,.0f} deals/s, "
              f"ratio {rate / rate_raw:.2f} (goal >= 50,000/s: {'met' if rate >= 50_000 else 'MISSED'}, "
              f">= 0.8 of raw: {'met' if rate / rate_raw >= 0.8 else 'MISSED'})")


if __name__ == "__main__":
    main()
