"""The line scanner: C and the re reference agree, templates mean what they say."""
import math
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepa_ops.logs import parser as logparse
from keepa_ops.logs import scanner as linescan
from keepa_ops.logs.scanner import FIELDS, Program, Template
from keepa_ops.logs.parser import PROGRAM, TEMPLATES, parse_logs
from tests.test_logparse import SAMPLE

PREFIXES = [b"[2026-02-04 10:00:01,481: WARNING/ForkPoolWorker-2] ", b"2026-02-04 10:00:01,481 - WARNING - ",
            b"2026-02-04 10:00:01,481 - keepa_deals.backfiller - INFO - ", b"INFO:keepa_deals.token_manager:",
            b"[2026-02-04 10:00:01,481: INFO/ForkPoolWorker-1] backfill_deals[9-z]: "]
VALUES = {"num": ["24.00", "-3", "250", "0.5", "007", "12345678901234567890.5"], "int": ["0", "150", "99999"],
          "word": ["update_recent_deals", "x"], "dotted": ["keepa_deals.backfiller.backfill_deals"],
          "id": ["6f1c-aa"], "token": ["2026-02-04T10:00:00+00:00", "B0\xff"], "text": ["", "rate limit. soon"],
          "sep": ["': ", " = ", ":"]}


def render(pattern: str, rng: random.Random) -> tuple[str, dict]:
    """An example message for ``pattern`` and the values its placeholders got."""
    values = {}

    def fill(m):
        name, op = m.group(1), m.group(2) or "num"
        v = rng.choice(VALUES[op])
        if name:
            values[name] = v
        return v
    return linescan._PLACEHOLDER.sub(fill, pattern), values


def same_scan(a: linescan.Scan, b: linescan.Scan):
    for f in ("line_start", "cls", "line", "kind", "event", "time_ms"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.shape == y.shape and np.array_equal(x, y, equal_nan=True), f
    for name in FIELDS:   # the same rows, ascending, and the same values
        (ra, va), (rb, vb) = a.fields[name], b.fields[name]
        assert ra.tolist() == rb.tolist() and np.array_equal(va, vb), name
    for c in linescan.TEXT_COLUMNS:   # the same codes into the same values, numbered by first appearance
        assert a.text[c][0].tolist() == b.text[c][0].tolist() and a.text[c][1] == b.text[c][1], c


def both(data: bytes):
    a = linescan.scan(data, 0, len(data), PROGRAM, native=True)
    b = linescan.scan(data, 0, len(data), PROGRAM, native=False)
    same_scan(a, b)
    return a


def test_the_native_scanner_is_built():
    # without them parsing and diagnosis still work (the reference and numpy forms), but at a
    # fraction of the speed #4 and #16 ask for
    from keepa_ops.diagnosis import runs

    assert linescan.NATIVE and runs._runs is not None


def test_every_template_variant_parses_its_own_example():
    rng = random.Random(1)
    for t in TEMPLATES:
        for event, pattern in t.variants:
            for prefix in PREFIXES:
                text, values = render(pattern, rng)
                sc = both(prefix + text.encode("utf-8", "surrogateescape") + b"\n")
                assert sc.cls.tolist() == [linescan.TOKEN], (pattern, text)
                assert logparse.KIND_NAMES[sc.kind[0]] == t.kind
                assert logparse.EVENT_NAMES[sc.event[0]] == event
                for name, v in values.items():
                    if name in FIELDS:
                        assert sc.field(name)[0] == float(v), (pattern, name)
                    else:
                        captured = sc.texts("capture")[0]
                        assert captured == v.encode("utf-8", "surrogateescape"), (pattern, name)


def test_numbers_backtrack_like_a_regex():
    # "250.5." then the literal "." : the number gives back its fraction only if it must
    sc = both(b"INFO:x:[Heartbeat] Waiting for tokens... Current: 29.5. Target: 250.5.\n"
              b"INFO:x:[Heartbeat] Waiting for tokens... Current: 29. Target: 250.5\n")
    assert sc.field("balance")[0] == 29.5 and sc.field("target")[0] == 250.5
    assert sc.field("target")[1] == 250   # "250" then the template's "." (the ".5" is left over)


def test_times_are_validated_like_strptime():
    sc = both(b"[2026-02-30 10:00:00,250: INFO/W-1] Tokens recovered (1 >= 3)\n"
              b"[2026-13-01 10:00:00,000: INFO/W-1] Tokens recovered (1 >= 3)\n"
              b"[2026-02-04 24:00:00,000: INFO/W-1] Tokens recovered (1 >= 3)\n")
    assert pd.Timestamp(sc.time_ms[0], unit="ms") == pd.Timestamp("2026-03-02 10:00:00.250")  # rolls over
    assert math.isnan(sc.time_ms[1]) and math.isnan(sc.time_ms[2])  # out of range: no time, still an event
    assert sc.cls.tolist() == [linescan.TOKEN] * 3


def test_line_classes():
    lines = [b"", b" ", b"\t\r", b"    \t  ", b"{\"event\": 1}", b"  File \"x.py\", line 3", b"ValueError: boom",
             b"Error: alone", b"a.b.CustomException", b"xErrorFoo", b"\xff\xfe junk",
             b"[2026-02-04 10:00:00,000: INFO/W-1] Task handler raised error: (", b"INFO:x:Task foo bar",
             b"INFO:x:", b"2026-02-04 10:00:00,000 - no level here"]
    sc = both(b"\n".join(lines) + b"\n")
    names = [linescan.CLASS_NAMES[c] for c in sc.cls]
    assert names == ["blank", "blank", "blank", "blank", "json", "continuation", "continuation", "bad", "continuation",
                     "bad", "bad", "failed", "other", "other", "other"]


MUTATIONS = [b"9", b".", b"-", b" ", b"\r", b"'", b"\xff", b"12.5", b"[", b"]: ", b"\n", b"{", b"\t"]


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 40))
def test_native_and_reference_agree_on_mutated_lines(rng, n):
    pool = SAMPLE.splitlines()
    for t in TEMPLATES:
        for _, pattern in t.variants:
            pool.append(rng.choice(PREFIXES) + render(pattern, rng)[0].encode("utf-8", "surrogateescape"))
    out = []
    for _ in range(n):
        b = bytearray(rng.choice(pool))
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(b) + 1)
            op = rng.random()
            if op < 0.25:
                b = b[:i]
            elif op < 0.5 and i < len(b):
                b[i] = rng.randrange(256)
            elif op < 0.8:
                b[i:i] = rng.choice(MUTATIONS)
            else:
                del b[i:i + rng.randint(1, 5)]
        out.append(bytes(b))
    both(b"\n".join(out) + rng.choice([b"", b"\n", b"\r\n"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_native_and_reference_agree_on_random_bytes(junk):
    both(junk)


def test_templates_are_checked_when_compiled():
    with pytest.raises(ValueError, match="unknown placeholder type 'float'"):
        Program([Template("X", "x", (("wait", "X {wait:float}"),))], ["x"], ["wait"])
    with pytest.raises(ValueError, match="must be one of balance"):
        Program([Template("X", "x", (("wait", "X {speed}"),))], ["x"], ["wait"])
    with pytest.raises(ValueError, match="at most one text field"):
        Program([Template("X", "x", (("wait", "X {a:word} {b:word}"),))], ["x"], ["wait"])


def test_many_distinct_texts_keep_their_codes_in_order_of_first_appearance():
    """The C scan codes each text column through a table that grows: 3,000 process names (each
    seen twice, the second time in reverse order) and as many task names agree with the reference."""
    names = [f"ForkPoolWorker-{k}" for k in range(3000)]
    lines = [f"[2026-02-04 10:00:00,000: INFO/{p}] --- Task: task_{k % 1500} started".encode()
             for k, p in enumerate(names + names[::-1])]
    sc = both(b"\n".join(lines) + b"\n")
    codes, values = sc.text["process"]
    assert values == [p.encode() for p in names] and codes.tolist() == list(range(3000)) + list(range(2999, -1, -1))
    assert len(sc.text["capture"][1]) == 1500


def test_the_c_boundary_refuses_bad_input_instead_of_crashing():
    data = b"INFO:x:Tokens recovered (1 >= 3)\n" * 4
    n, nf, nt = 4, len(FIELDS), len(linescan.TEXT_COLUMNS)
    bufs = [np.empty(n, np.uint8), np.empty(n + 1, np.int64), np.empty(n, np.int32), np.empty(n, np.int16),
            np.empty(n, np.int16), np.empty(n, np.float64), np.empty(nf, np.int64), np.empty(nf * n, np.int32),
            np.empty(nf * n, np.float64), np.empty(nt * n, np.int32), np.empty(nt * (n + 1), np.int64),
            np.empty(nt * len(data), np.uint8), np.empty(nt, np.int64)]
    scan = linescan._linescan.scan
    assert scan(data, 0, len(data), PROGRAM.code, nf, *bufs) == (4, 4)
    with pytest.raises(ValueError, match="malformed program"):
        scan(data, 0, len(data), PROGRAM.code[:-3], nf, *bufs)
    with pytest.raises(ValueError, match="range or output buffers"):
        scan(data, 0, len(data) + 1, PROGRAM.code, nf, *bufs)
    with pytest.raises(ValueError, match="more lines than"):
        scan(data[:9] + b"\n" + data[10:], 0, len(data), PROGRAM.code, nf, *bufs)
    for k in range(6, len(bufs)):   # every output buffer is checked for its size
        short = list(bufs)
        short[k] = short[k][:-1]
        with pytest.raises(ValueError, match="range or output buffers"):
            scan(data, 0, len(data), PROGRAM.code, nf, *short)


def frame_of(path) -> pd.DataFrame:
    p = parse_logs(path)
    ev = p.events.copy()
    for c in ev.columns:
        if isinstance(ev[c].dtype, pd.CategoricalDtype):
            ev[c] = ev[c].astype(object)
    return ev, p.stats, p.skipped


def test_ranges_split_anywhere_give_the_same_events(tmp_path, monkeypatch):
    f = tmp_path / "w.log"
    f.write_bytes(SAMPLE * 7 + b"no newline at the end")
    whole = frame_of(f)
    monkeypatch.setattr(logparse, "CHUNK", 97)   # many ranges, lines longer than a range
    parts = frame_of(f)
    pd.testing.assert_frame_equal(whole[0], parts[0])
    assert whole[1] == parts[1]
    pd.testing.assert_frame_equal(whole[2], parts[2])


def test_without_the_extension_parsing_gives_the_same_answer(tmp_path, monkeypatch):
    from keepa_ops.logs.incidents import make_incident_log

    f = tmp_path / "w.log"
    f.write_bytes(SAMPLE)
    make_incident_log("seed_before_fix", tmp_path / "celery_worker.log")
    native = frame_of(tmp_path)
    monkeypatch.setattr(linescan, "NATIVE", False)
    plain = frame_of(tmp_path)
    pd.testing.assert_frame_equal(native[0], plain[0])
    assert native[1] == plain[1]


def test_without_the_extension_the_diagnosis_is_the_same(monkeypatch):
    """A legacy corpus log with pool processes, worker losses and restarts diagnoses the same, runs
    and waits included, when its pool processes' runs are split by the numpy form instead of C."""
    from pathlib import Path

    from keepa_ops.diagnosis import runs
    from keepa_ops.diagnosis.evidence import gather

    log = Path(__file__).parent / "data" / "legacy_corpus" / "seed_incident_rotated"
    events = parse_logs(log).events
    native = gather(events)
    monkeypatch.setattr(runs, "_runs", None)
    plain = gather(events)
    assert len(native.runs) > 100
    pd.testing.assert_frame_equal(native.runs, plain.runs)
    pd.testing.assert_frame_equal(native.waits, plain.waits)
    pd.testing.assert_frame_equal(native.events, plain.events)
    assert native.tasks == plain.tasks and native.stalled == plain.stalled


def test_template_text_is_the_documented_message():
    # every template prefix is where its own variants start
    for t in TEMPLATES:
        for _, pattern in t.variants:
            assert pattern.startswith(t.prefix), pattern


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 60), st.integers(1, 5))
def test_native_and_numpy_task_filling_agree(rng, n, ngroups):
    """The C pass that gives worker lines their segment's task agrees with the numpy form it replaces,
    on random rows: groups and no-worker rows, starts, ends, skips, tasks named and not."""
    group = np.asarray([rng.randrange(-1, ngroups) for _ in range(n)], np.int32)
    kind = np.asarray([rng.choice([0, 0, 0, 1, 2, 3]) for _ in range(n)], np.int8)
    codes = np.asarray([rng.choice([-1, -1, 0, 1, 2]) for _ in range(n)], np.int32)
    native, numpy_ = codes.copy(), codes.copy()
    linescan._linescan.fill_tasks(group, kind, native, ngroups)
    logparse._fill_tasks(group, kind, numpy_)
    assert native.tolist() == numpy_.tolist()
    assert all(native[i] == codes[i] for i in range(n) if codes[i] >= 0 or group[i] < 0)   # only gaps are filled
    with pytest.raises(ValueError, match="group out of range"):
        linescan._linescan.fill_tasks(np.asarray([ngroups], np.int32), np.zeros(1, np.int8), np.zeros(1, np.int32),
                                      ngroups)


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 80), st.integers(1, 3), st.integers(1, 3))
def test_native_and_numpy_process_runs_agree(rng, n, nstreams, nproc):
    """The C pass that splits pool processes' lines into runs gives the numpy form's runs, on random rows:
    starts, skips, ends, retries, other lines, deaths (named or not) and restarts, with tasks,
    targets and announced waits scattered among them."""
    from keepa_ops.diagnosis import runs

    stream = np.asarray([rng.randrange(nstreams) for _ in range(n)], np.int32)
    what = np.asarray([rng.choice([0, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5]) for _ in range(n)], np.int8)
    group = np.asarray([s * nproc + rng.randrange(nproc) if w in (1, 2, 3) or (w == 4 and rng.random() < 0.8)
                        else -1 for s, w in zip(stream.tolist(), what.tolist())], np.int32)
    flags = np.asarray([rng.randrange(256) for _ in range(n)], np.uint8)
    task = np.asarray([rng.choice([-1, -1, 0, 1]) for _ in range(n)], np.int32)
    target = np.asarray([rng.choice([np.nan, 150.0, 250.0]) for _ in range(n)])
    wait = np.asarray([rng.choice([np.nan, 30.0, 600.0]) for _ in range(n)])
    args = (group, what, stream, flags, task, target, wait, nproc)
    native, numpy_ = runs._process_runs_native(*args), runs._process_runs_numpy(*args)
    for name, a, b in zip(("run_of", "open", "last", "end", "how", "task", "target", "announced", "flags", "lost"),
                          native, numpy_):
        assert np.array_equal(a, b, equal_nan=True), name
