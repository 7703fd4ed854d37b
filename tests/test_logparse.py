"""Parsing production logs: formats, attribution, accounting, and never crashing."""
import gzip
import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepa_ops.logs.parser import parse_logs

SAMPLE = b"""[2026-02-04 10:00:00,000: INFO/MainProcess] Task keepa_deals.simple_task.update_recent_deals[6f1c-aa] received
[2026-02-04 10:00:00,100: INFO/ForkPoolWorker-2] --- Task: update_recent_deals started (Version: 2.1) ---
[2026-02-04 10:00:00,200: INFO/ForkPoolWorker-2] Successfully retrieved token status: {'tokensLeft': 24, 'refillRate': 5, 'refillIn': 3000}
[2026-02-04 10:00:01,481: WARNING/ForkPoolWorker-2] Insufficient tokens (Current: 24.00, Target: 250). Waiting for 2712s.
[2026-02-04 10:00:01,500: INFO/ForkPoolWorker-1] backfill_deals[99-zz]: Batch API call successful. Tokens consumed: 100. Tokens left: 80
Traceback (most recent call last):
  File "x.py", line 3, in <module>
ValueError: boom
\xff\xfe\x00garbage \x80\x81
[2026-02-04 10:01:01,481: INFO/ForkPoolWorker-2] [Heartbeat] Waiting for tokens... Current: 29.00. Target: 250. Remaining: 2652s
[2026-02-04 10:01:02,000: INFO/ForkPoolWorker-2] Task keepa_deals.simple_task.update_recent_deals[6f1c-aa] succeeded in 3.21s: None
2026-02-05 10:15:02,481 - keepa_deals.token_manager - WARNING - Insufficient tokens (Current: 37.00, Target: 50). Waiting for 216s.
2026-02-05 10:15:03,000 - WARNING - Insufficient tokens (Current: 24.00, Target: 250). Waiting...
WARNING:keepa_deals.backfiller:Insufficient tokens (Current: 24.00, Target: 180). Wait 1872s > 60s. Exiting task.
[2026-02-05 10:16:00,000: INFO/ForkPoolWorker-3] Something unrelated happened
{"ts":"2026-02-05T10:17:00.000Z","t":1.0,"event":"grant","task":"backfill_deals","balance":180.0,"target":180.0,"cost":100.0,"items":5,"wait_s":1872.0}
"""


def accounted(stats):
    return stats["events"] + stats["other"] + stats["continuation"] + stats["blank"] + stats["skipped"]


def test_every_format_and_attribution(tmp_path):
    (tmp_path / "w.log").write_bytes(SAMPLE)
    p = parse_logs(tmp_path / "w.log")
    ev = p.events
    assert p.stats["lines"] == 16 == accounted(p.stats)
    assert p.stats["continuation"] == 3 and p.stats["skipped"] == 1 and p.stats["other"] == 1
    assert p.skipped["line"].tolist() == [9]
    wait = ev[(ev["event"] == "wait") & (ev["target"] == 250)].iloc[0]
    # the token manager line names no task: its worker process (ForkPoolWorker-2) runs update_recent_deals
    assert wait["task"] == "update_recent_deals" and wait["balance"] == 24 and wait["wait"] == 2712
    assert wait["process"] == "ForkPoolWorker-2" and wait["line"] == 4
    assert str(wait["time"]) == "2026-02-04 10:00:01.481000"
    spend = ev[ev["event"] == "spend"].iloc[0]
    assert spend["task"] == "backfill_deals" and spend["consumed"] == 100 and spend["tokens_left"] == 80
    assert ev[ev["event"] == "sync"].iloc[0]["refill_rate"] == 5
    assert ev[ev["event"] == "heartbeat"].iloc[0]["task"] == "update_recent_deals"
    basic = ev[ev["target"] == 50].iloc[0]
    assert basic["balance"] == 37 and str(basic["time"]).startswith("2026-02-05 10:15:02.481")
    abort = ev[ev["event"] == "abort"].iloc[0]
    assert abort["task"] == "backfill_deals" and abort["target"] == 180   # from the logger's module
    assert pd_isna(abort["process"]) and str(abort["time"]).startswith("2026-02-05 10:15:03")  # no time: carried
    own = ev[ev["kind"] == "keepa_ops"].iloc[0]
    assert own["event"] == "grant" and own["task"] == "backfill_deals" and own["wait"] == 1872
    for col, kind in [("balance", "float64"), ("line", "int64"), ("items", "Int64")]:
        assert str(ev[col].dtype) == kind
    assert str(ev["time"].dtype).startswith("datetime64")


def pd_isna(x):
    import pandas as pd

    return pd.isna(x)


def test_rotated_gzip_and_directories(tmp_path):
    lines = SAMPLE.splitlines(keepends=True)
    d = tmp_path / "logs"
    d.mkdir()
    (d / "celery_worker.log.2.gz").write_bytes(gzip.compress(b"".join(lines[:5])))
    (d / "celery_worker.log.1").write_bytes(b"".join(lines[5:11]))
    (d / "celery_worker.log").write_bytes(b"".join(lines[11:]))
    p = parse_logs(d)
    assert p.stats["files"] == 3 and p.stats["lines"] == 16 == accounted(p.stats)
    # one stream, oldest first: the heartbeat in .1 still belongs to the run started in .2.gz
    hb = p.events[p.events["event"] == "heartbeat"].iloc[0]
    assert hb["task"] == "update_recent_deals" and hb["stream"] == "celery_worker.log"
    assert p.events["time"].is_monotonic_increasing


def test_rotated_set_is_read_oldest_first_for_attribution(tmp_path):
    start = (b"[2026-02-04 10:00:00,100: INFO/ForkPoolWorker-2] --- Task: update_recent_deals started (Version: 2.1) ---\n"
             b"[2026-02-04 10:00:01,481: WARNING/ForkPoolWorker-2] Insufficient tokens (Current: 24.00, Target: 250). "
             b"Waiting for 2712s.\n")
    beat = (b"[2026-02-04 %s: INFO/ForkPoolWorker-2] [Heartbeat] Waiting for tokens... Current: 29.00. "
            b"Target: 250. Remaining: 2652s\n")
    (tmp_path / "celery_worker.log.1.gz").write_bytes(gzip.compress(start + beat % b"10:01:01,481"))
    (tmp_path / "celery_worker.log").write_bytes(beat % b"23:01:01,481")
    p = parse_logs(tmp_path)
    hb = p.events[p.events["event"] == "heartbeat"]
    assert hb["task"].tolist() == ["update_recent_deals"] * 2   # the newest file's lines still know their task
    w = p.waits()
    assert w.iloc[0]["duration_s"] == pytest.approx(13 * 3600 + 60, abs=1)


def test_truncated_gzip_keeps_what_it_can(tmp_path):
    blob = gzip.compress(SAMPLE * 50)
    (tmp_path / "x.log.gz").write_bytes(blob[: len(blob) // 2])
    p = parse_logs(tmp_path / "x.log.gz")
    assert p.stats["truncated_files"] == 1
    assert 0 < p.stats["events"] and p.stats["lines"] == accounted(p.stats)


def test_utf16_log_is_read(tmp_path):
    (tmp_path / "u.log").write_bytes(SAMPLE.decode("utf-8", "replace").encode("utf-16"))
    p = parse_logs(tmp_path / "u.log")
    assert (p.events["target"] == 250).any()


def test_lines_cut_at_every_position_never_crash(tmp_path):
    data = SAMPLE[:700]
    f = tmp_path / "cut.log"
    for k in range(0, len(data), 3):
        f.write_bytes(data[:k])
        p = parse_logs(f)
        assert p.stats["lines"] == accounted(p.stats)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000), st.integers(0, 15))
def test_random_bytes_never_crash(tmp_path, junk, cut):
    f = tmp_path / "junk.log"
    lines = SAMPLE.splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:cut]) + junk + b"".join(lines[cut:]))
    p = parse_logs(f)
    assert p.stats["lines"] == accounted(p.stats)
    assert p.stats["events"] >= 1 or not lines[:cut]


def test_missing_path_is_a_clear_error(tmp_path):
    from keepa_ops.errors import LogParseError

    with pytest.raises(LogParseError, match="no such file"):
        parse_logs(tmp_path / "nope.log")


def test_timeline_and_waits(tmp_path):
    (tmp_path / "w.log").write_bytes(SAMPLE)
    p = parse_logs(tmp_path / "w.log")
    tl = p.timeline()
    assert tl["observed"].notna().sum() >= 5 and tl["interpolated"].notna().sum() > 10
    w = p.waits()
    up = w[w["task"] == "update_recent_deals"].iloc[0]
    assert up["target"] == 250 and up["ended_by"] == "run_finished"


def test_cli_parse_writes_parquet_and_reports(tmp_path, capsys):
    import pandas as pd

    from keepa_ops.cli import main

    (tmp_path / "w.log").write_bytes(SAMPLE)
    assert main(["parse", str(tmp_path / "w.log"), "--out", str(tmp_path / "e.parquet"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] == 1
    assert len(pd.read_parquet(tmp_path / "e.parquet")) == out["events"]


@pytest.mark.parametrize("log", ["saturation_named.log", "ingestor_livelock.log"])
def test_parquet_written_slice_by_slice_reads_back_as_the_whole_frame(tmp_path, monkeypatch, log):
    """parse --out assembles and writes a few events at a time. On a file whose lines are out of time
    order (so each slice gathers rows from all over the scanned parts), what is read back is what the
    whole frame writes, and each line's own values are those the lines carry in the file as it was
    (parsed in order, where no gathering happens)."""
    from pathlib import Path

    import keepa_ops.logs.parser as parser

    original = Path(__file__).parent / "data" / "legacy_corpus" / log
    lines = original.read_bytes().splitlines(keepends=True)
    blocks = [list(range(i, min(i + 97, len(lines)))) for i in range(0, len(lines), 97)]
    order = [n for b in blocks[1::2] + blocks[::2] for n in b]      # whole stretches out of order
    (tmp_path / "w.log").write_bytes(b"".join(lines[n] for n in order))
    whole = parse_logs(tmp_path / "w.log")
    assert whole.events["time"].is_monotonic_increasing and whole.events["detail"].notna().any()
    whole.events.to_parquet(tmp_path / "whole.parquet", index=False)
    monkeypatch.setattr(parser, "ROW_GROUP", 53)
    stats = parser.write_parquet(tmp_path / "w.log", tmp_path / "sliced.parquet")
    assert stats == whole.stats and stats["events"] > 3 * 53
    sliced = pd.read_parquet(tmp_path / "sliced.parquet")
    pd.testing.assert_frame_equal(sliced, pd.read_parquet(tmp_path / "whole.parquet"))
    # each line's own values, against the file in its own order
    own = ["event", "kind", "balance", "target", "wait", "cost", "consumed", "tokens_left", "refill_rate", "items",
           "threshold", "detail"]
    first = parse_logs(original).events.set_index("line")[own].astype(object)
    was = pd.Series([n + 1 for n in order], index=range(1, len(order) + 1))   # line now -> line then
    got = sliced.set_index(was.loc[sliced["line"]].to_numpy())[own].astype(object).sort_index()
    pd.testing.assert_frame_equal(got, first.loc[got.index], check_names=False)


def test_parquet_of_a_rotated_set_with_a_copy_beside_it_drops_the_repeats_as_parse_logs_does(tmp_path, monkeypatch):
    """Several files are written slice by slice too; the events one file repeats from another are
    found by their hashes and dropped exactly as parse_logs drops them from the whole frame."""
    import shutil
    from pathlib import Path

    import keepa_ops.logs.parser as parser

    src = Path(__file__).parent / "data" / "legacy_corpus" / "seed_incident_rotated"
    shutil.copytree(src, tmp_path / "logs")
    shutil.copy(src / "celery_worker.log", tmp_path / "logs" / "celery_worker.log.bak")   # a copy beside it
    whole = parse_logs(tmp_path / "logs")
    assert whole.stats["duplicate_events"] > 1000
    whole.events.to_parquet(tmp_path / "whole.parquet", index=False)
    monkeypatch.setattr(parser, "ROW_GROUP", 997)
    stats = parser.write_parquet(tmp_path / "logs", tmp_path / "sliced.parquet")
    assert stats == whole.stats
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sliced.parquet"),
                                  pd.read_parquet(tmp_path / "whole.parquet"))


def test_bad_utf8_inside_a_captured_value_is_kept_not_fatal(tmp_path):
    # found by the mutation corpus: this line made the parser raise ArrowInvalid
    (tmp_path / "u.log").write_bytes(b"INFO:x:Loaded watermark: 2026-02-04T10:\xc50:00+00:00 (Keepa time: 1)\n")
    p = parse_logs(tmp_path / "u.log")
    assert p.stats["events"] == 1
    assert json.loads(p.events["detail"].iloc[0]) == {"iso": "2026-02-04T10:\ufffd0:00+00:00"}


def test_json_fields_of_the_wrong_type_are_absent_not_fatal(tmp_path):
    (tmp_path / "j.log").write_bytes(
        b'{"ts":"2026-02-05T10:17:00Z","event":"grant","task":"b","balance":"abc","items":"x","cost":true}\n'
        b'{"ts":5,"event":"wait","task":["l"],"target":1e999}\n'
        b'{"event":7}\n[1, 2]\n')
    p = parse_logs(tmp_path / "j.log")
    assert p.stats["events"] == 2 and p.stats["skipped"] == 2
    grant = p.events[p.events["event"] == "grant"].iloc[0]
    assert grant["task"] == "b" and pd_isna(grant["balance"]) and pd_isna(grant["items"]) and pd_isna(grant["cost"])
    wait = p.events[p.events["event"] == "wait"].iloc[0]
    assert pd_isna(wait["task"]) and pd_isna(wait["target"])


def test_only_worker_lines_borrow_the_running_task(tmp_path):
    (tmp_path / "w.log").write_bytes(
        b"[2026-02-04 10:00:00,000: INFO/MainProcess] Task keepa_deals.backfiller.backfill_deals[1-a] received\n"
        b"[2026-02-04 10:00:00,100: INFO/ForkPoolWorker-1] --- Task: backfill_deals started ---\n"
        b"[2026-02-04 10:00:01,000: INFO/ForkPoolWorker-1] Tokens recovered (200 >= 180). Resuming.\n"
        b"[2026-02-04 10:00:02,000: INFO/MainProcess] Tokens recovered (10 >= 5). Resuming.\n"
        b"2026-02-04 10:00:03,000 - WARNING - Insufficient tokens (Current: 24.00, Target: 250). Waiting...\n"
        b"[2026-02-04 10:00:04,000: INFO/ForkPoolWorker-1] Task keepa_deals.backfiller.backfill_deals[1-a] "
        b"succeeded in 4.0s: None\n"
        b"[2026-02-04 10:00:05,000: INFO/ForkPoolWorker-1] Tokens recovered (1 >= 1). Resuming.\n")
    ev = parse_logs(tmp_path / "w.log").events.set_index("line")
    assert ev.loc[3, "task"] == "backfill_deals"   # its worker runs backfill_deals
    assert pd_isna(ev.loc[4, "task"])              # Celery's MainProcess runs no task
    assert pd_isna(ev.loc[5, "task"])              # no process named: nothing to borrow
    assert pd_isna(ev.loc[7, "task"])              # after the worker finished its task


def test_special_files_are_skipped_with_a_note_not_read(tmp_path):
    """Reading a FIFO blocks forever; it is named in the notes instead."""
    import os

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "w.log").write_bytes(SAMPLE)
    os.mkfifo(tmp_path / "logs" / "pipe.log")
    for paths in ([tmp_path / "logs"], [tmp_path / "logs" / "w.log", tmp_path / "logs" / "pipe.log"]):
        p = parse_logs(paths)
        assert p.stats["files"] == 1 and p.stats["events"] > 0
        assert len(p.stats["skipped_paths"]) == 1 and "pipe.log: not a regular file" in p.stats["skipped_paths"][0]


def test_cr_only_line_ends_are_lines(tmp_path):
    (tmp_path / "mac.log").write_bytes(SAMPLE.replace(b"\n", b"\r"))
    (tmp_path / "unix.log").write_bytes(SAMPLE)
    mac, unix = parse_logs(tmp_path / "mac.log"), parse_logs(tmp_path / "unix.log")
    assert mac.stats["lines"] == unix.stats["lines"] == 16 and mac.stats["events"] == unix.stats["events"]


def _block_sizes(monkeypatch, reader: str) -> list:
    """The size of every block ``sources.<reader>`` yields from now on (the list fills as it reads)."""
    from keepa_ops.logs import sources
    seen, real = [], getattr(sources, reader)

    def spy(f, block_size):
        for block, truncated in real(f, block_size):
            seen.append(len(block))
            yield block, truncated

    monkeypatch.setattr(sources, reader, spy)
    return seen


def test_a_gzip_is_parsed_as_a_stream_in_blocks_with_the_same_answer(tmp_path, monkeypatch):
    """A gzip that inflates far past the block size: same events and line numbers as the plain file,
    while no block held more than the block size (memory follows the block, not the inflated size)."""
    from keepa_ops.logs import sources
    body = SAMPLE * 400  # ~1 MB inflated
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "w.log").write_bytes(body)
    with gzip.open(tmp_path / "w.log.gz", "wb") as f:  # two members, as `cat a.gz b.gz` makes
        f.write(body[:len(body) // 3])
    with open(tmp_path / "w.log.gz", "ab") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as f:
        f.write(body[len(body) // 3:])
    seen = _block_sizes(monkeypatch, "_inflate")
    monkeypatch.setattr(sources, "BLOCK_SIZE", 64 << 10)
    monkeypatch.setattr(sources.Source.blocks, "__defaults__", (64 << 10,))
    streamed = parse_logs([tmp_path / "w.log.gz"])
    plain = parse_logs([tmp_path / "plain" / "w.log"])
    assert len(seen) >= 9 and max(seen) <= 64 << 10
    assert streamed.stats["lines"] == plain.stats["lines"] and streamed.stats["truncated_files"] == 0
    cols = ["line", "event", "task", "time"]
    assert streamed.events[cols].reset_index(drop=True).equals(plain.events[cols].reset_index(drop=True))


def test_gzips_in_utf16_with_a_bom_or_with_cr_line_ends_read_like_the_plain_file_over_many_blocks(tmp_path,
                                                                                                    monkeypatch):
    """The first block decides what a whole file's bytes say (UTF-16, a UTF-8 BOM, old-Mac CR line
    ends), and the decision holds for every later block: a gzip far bigger than a block, in each
    encoding, gives the plain UTF-8 file's lines and events."""
    from keepa_ops.logs import sources
    body = SAMPLE * 400   # ~1 MB, ~16 blocks of 64 KB
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "w.log").write_bytes(body)
    text = body.decode("utf-8", "replace")
    variants = {"utf16": text.encode("utf-16"), "bom": b"\xef\xbb\xbf" + body, "mac": body.replace(b"\n", b"\r")}
    for name, data in variants.items():
        (tmp_path / name).mkdir()
        with gzip.open(tmp_path / name / "w.log.gz", "wb") as f:
            f.write(data)
    monkeypatch.setattr(sources.Source.blocks, "__defaults__", (64 << 10,))
    plain = parse_logs(tmp_path / "plain" / "w.log")
    if "utf16" in variants:   # the UTF-8 reference of the UTF-16 file is its own text re-encoded
        (tmp_path / "plain16").mkdir()
        (tmp_path / "plain16" / "w.log").write_bytes(text.encode("utf-8"))
    cols = ["line", "event", "task", "time", "balance", "target"]
    for name in variants:
        ref = parse_logs(tmp_path / "plain16" / "w.log") if name == "utf16" else plain
        got = parse_logs(tmp_path / name / "w.log.gz")
        assert got.stats["lines"] == ref.stats["lines"] and got.stats["events"] == ref.stats["events"], name
        assert got.stats["skipped"] == ref.stats["skipped"], name
        assert got.events[cols].reset_index(drop=True).equals(ref.events[cols].reset_index(drop=True)), name


def test_a_plain_file_is_read_in_blocks_with_the_same_answer(tmp_path, monkeypatch):
    """A plain file is read a block at a time (memory follows the block, not the file): blocks
    that split lines anywhere give the same events, line numbers and counts as one whole read;
    old-Mac line ends and a UTF-8 BOM are handled as for a whole file."""
    from keepa_ops.logs import sources
    body = SAMPLE * 50
    (tmp_path / "w.log").write_bytes(b"\xef\xbb\xbf" + body)
    (tmp_path / "mac.log").write_bytes(body.replace(b"\n", b"\r"))
    whole = {n: parse_logs(tmp_path / n) for n in ("w.log", "mac.log")}
    blocks = _block_sizes(monkeypatch, "_plain_blocks")
    monkeypatch.setattr(sources.Source.blocks, "__defaults__", (997,))  # a prime: cuts fall anywhere
    for name, ref in whole.items():
        blocks.clear()
        got = parse_logs(tmp_path / name)
        assert len(blocks) > 20 and max(blocks) < 997 + 400, name
        assert got.stats["lines"] == ref.stats["lines"] and got.stats["events"] == ref.stats["events"], name
        pd.testing.assert_frame_equal(got.events, ref.events)
