"""The SQLite deals store: idempotent upserts, watermark and rows in one transaction, WAL."""
import sqlite3

import pytest

from keepa_ops.live.store import DealStore, StoreFailed
from keepa_ops.keepa.wire import DealRef


def refs(n, start=0):
    return [DealRef(1000 + i, f"B{i:09d}") for i in range(start, start + n)]


def test_upsert_is_idempotent(tmp_path):
    st = DealStore(tmp_path / "d.sqlite")
    r = refs(5)
    rows = [{"asin": x.asin, "title": "t", "lastUpdate": 1, "price": 100} for x in r]
    st.commit_new("up", rows, r, r[-1])
    st.commit_new("up", rows, r, r[-1])
    c = st.counts()["live"]
    assert c["deals"] == 5 and c["writes"] == 10
    assert st.watermark("up") == r[-1]


def test_watermark_and_rows_commit_together(tmp_path):
    st = DealStore(tmp_path / "d.sqlite")
    st.commit_new("up", [], refs(3), refs(3)[-1])
    # A real failure inside the transaction: a trigger refuses this watermark.
    st.conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON watermarks WHEN NEW.asin = 'B000000009' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(StoreFailed, match="refused.*rolled back"):
        st.commit_new("up", [], refs(7, 3), refs(7, 3)[-1])
    assert st.counts()["live"]["deals"] == 3          # none of the 7 rows
    assert st.watermark("up") == refs(3)[-1]          # and the watermark did not move
    st.commit_backfill("bf", [], refs(2, 50), (4, 20))
    assert st.checkpoint("bf") == (4, 20)


def test_wal_lets_a_reader_read_while_a_writer_writes(tmp_path):
    st = DealStore(tmp_path / "d.sqlite")
    st.commit_new("up", [], refs(3), refs(3)[-1])
    assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.conn.execute("BEGIN IMMEDIATE")
    st.conn.execute("DELETE FROM deals")
    reader = sqlite3.connect(tmp_path / "d.sqlite", timeout=0.1)
    assert reader.execute("SELECT COUNT(*) FROM deals").fetchone()[0] == 3
    st.conn.execute("ROLLBACK")


def test_runs_table(tmp_path):
    st = DealStore(tmp_path / "d.sqlite", now_fn=lambda: 42.0)
    st.run_started("up")
    st.run_finished("up", "ok", 7)
    assert st.conn.execute("SELECT task, started, finished, outcome, items FROM runs").fetchall() == [
        ("up", 42.0, 42.0, "ok", 7)]


def test_a_full_disk_rolls_the_batch_back_whole_and_says_so_in_one_line(tmp_path):
    """SQLite's max_page_count makes the file 'full' exactly as a full disk would (SQLITE_FULL)."""
    from keepa_ops import KeepaOpsError
    from keepa_ops.keepa.wire import DealRef
    from keepa_ops.live.store import DealStore
    store = DealStore(tmp_path / "d.sqlite")
    first = [DealRef(100.0, f"B{i:09d}") for i in range(10)]
    store.commit_new("up", [{"asin": r.asin} for r in first], first, first[-1])
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [DealRef(200.0, f"C{i:09d}" + "x" * 300) for i in range(2000)]
    with pytest.raises(KeepaOpsError) as e:
        store.commit_new("up", [{"asin": r.asin, "title": "t" * 500} for r in big], big, big[-1])
    msg = str(e.value)
    assert "\n" not in msg and "rolled back" in msg and "Fix:" in msg and "full" in msg
    assert store.watermark("up") == first[-1]          # the watermark did not move
    assert store.counts()["live"]["deals"] == 10       # and no row of the batch is stored
    store.close()
