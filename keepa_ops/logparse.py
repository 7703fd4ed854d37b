"""Production logs -> one typed pandas DataFrame of token events.

Reads the legacy Celery pipeline's formats (worker default, ``basicConfig`` with or
without the logger name, Python's default) and keepa-ops' own JSON-lines event log,
mixed in any proportion, from files, directories, rotated sets and gzip.

Invariants:
* every line is either an event, a known non-token line ("other"), part of a
  traceback ("continuation"), blank, or counted as skipped and kept aside:
  ``stats["lines"]`` is their sum, and no input makes the parser raise;
* a line that names no task gets the task its worker process is running, from the
  Celery received/succeeded lines and the tasks' own start/finish lines.

Speed: lines are zero-copy slices of the file's bytes in an Arrow binary array; the
filters are RE2 regexes without captures (DFA speed) over every line, and the
capturing regexes run only on the token-story lines, one message template at a time.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .logsource import read_sources

LEVELS = "DEBUG|INFO|WARNING|ERROR|CRITICAL"
TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
N = r"-?\d+(?:\.\d+)?"
CHUNK = 16 << 20
THREADS = 2

FORMATS = {
    "celery": rf"^\[(?P<ts>{TS}): (?P<level>[A-Z]+)/(?P<process>[\w.\-]+)\] (?P<msg>[^\r\n]*)",
    "basic": rf"^(?P<ts>{TS}) - (?:(?P<logger>[\w.]+) - )?(?P<level>{LEVELS}) - (?P<msg>[^\r\n]*)",
    "default": rf"^(?P<level>{LEVELS}):(?P<logger>[\w.]+):(?P<msg>[^\r\n]*)",
}
PREFIX_ANY = rf"^(?:\[{TS}: [A-Z]+/[\w.\-]+\] |{TS} - |(?:{LEVELS}):[\w.]+:)"
CONTINUATION = (r"^(?:[ \t]+\S|Traceback \(most recent call last\)|During handling of the above|"
                r"The above exception|[\w.]+(?:Error|Exception|Exit|Interrupt|Warning)\b)")
TASK_LOGGER = r"^(?P<tl_task>[\w.]+)\[(?P<tl_id>[\w\-]+)\]: (?P<rest>[^\r\n]*)"

# (literal start, template name, regex). The event kind is decided in _event_of.
TEMPLATES = [
    ("Insufficient tokens", "insufficient_tokens",
     rf"^Insufficient tokens \(Current: (?P<balance>{N}), Target: (?P<target>{N})\)\. "
     rf"(?:Waiting(?: for (?P<wait>{N})s)?|Wait (?P<wait2>{N})s > (?P<limit>{N})s\. Exiting)"),
    ("Entered wait loop", "wait_loop",
     rf"^Entered wait loop\. (?:Initial Wait: (?P<wait>{N})s\. Target: (?P<target>{N})|"
     rf"Estimated Wait: (?P<wait2>{N})s to reach (?P<target2>{N}) tokens)"),
    ("Tokens recovered", "tokens_recovered", rf"^Tokens recovered \((?P<balance>{N}) >= (?P<target>{N})\)"),
    ("[Heartbeat] Waiting", "heartbeat",
     rf"^\[Heartbeat\] Waiting for tokens\.\.\. Current: (?P<balance>{N})\. Target: (?P<target>{N})\."
     rf"(?: Remaining: (?P<wait>{N})s)?"),
    ("Priority Pass", "priority_pass", rf"^Priority Pass: allowing small cost (?P<cost>{N})\. Balance: (?P<balance>{N})"),
    ("Tokens critically low", "recharge_enter",
     rf"^Tokens critically low \((?P<balance>{N}) < (?P<threshold>{N})\)\. Entering Recharge Mode until (?P<target>{N})"),
    ("Recharge Mode Active", "recharge_wait", rf"^Recharge Mode Active \(Tokens: (?P<balance>{N})/(?P<target>{N})\)"),
    ("Burst threshold reached", "recharge_exit", rf"^Burst threshold reached \((?P<balance>{N}) >= (?P<target>{N})\)"),
    ("Request blocked", "request_blocked",
     rf"^Request blocked: Projected balance (?P<balance>{N}) exceeds max deficit (?P<target>{N})"),
    ("Zero or negative tokens", "zero_tokens",
     rf"^Zero or negative tokens\. Have: (?P<balance>{N})\. Waiting for (?P<wait>{N}) seconds"),
    ("Low tokens", "low_tokens",
     rf"^Low tokens \(Below Threshold (?P<threshold>{N})\)\. Have: (?P<balance>{N})\. Waiting for (?P<wait>{N}) "
     rf"seconds to recover to (?P<target>{N})"),
    ("Token count authoritatively", "token_sync",
     rf"^Token count authoritatively synced from API response\. Previous estimate: (?P<estimate>{N}), "
     rf"New value: (?P<left>{N})"),
    ("Skipping sync_tokens", "sync_skipped", r"^Skipping sync_tokens"),
    ("Fetched ", "fetched", rf"^Fetched (?P<items>\d+) deals\. Tokens consumed: (?P<consumed>{N})\. Tokens left: (?P<left>{N})"),
    ("Batch API call successful", "batch_call",
     rf"^Batch API call successful\. Tokens consumed: (?P<consumed>{N})\. Tokens left: (?P<left>{N})"),
    ("Lightweight batch call", "light_call",
     rf"^Lightweight batch call successful\. Tokens consumed: (?P<consumed>{N})\. Tokens left: (?P<left>{N})"),
    ("429 ERROR", "error_429",
     rf"^429 ERROR\. Keepa reported (?P<consumed>{N}) tokens consumed for this failed call\. Tokens left: (?P<left>{N})"),
    ("Successfully retrieved token", "token_status",
     rf"^Successfully retrieved token status: .*?tokensLeft'?\"?\s*[:=]\s*(?P<left>{N})"),
    ("--- Task: ", "task_line",
     r"^--- Task: (?P<task>\w+) (?P<what>started|finished|is already running)"),
    ("--- Resuming backfill", "backfill_resume", r"^--- Resuming backfill from page (?P<page>\d+), chunk (?P<chunk>\d+)"),
    ("--- Backfill state saved", "backfill_saved", r"^--- Backfill state saved\. Page: (?P<page>\d+), Chunk: (?P<chunk>\d+)"),
    ("--- Task Paused", "task_paused", r"^--- Task Paused: (?P<reason>[^\r\n]*?)\. Releasing lock"),
    ("Loaded watermark", "watermark_loaded", r"^Loaded watermark: (?P<iso>\S+)"),
    ("Successfully updated watermark", "watermark", r"^Successfully updated watermark to (?P<iso>\S+)"),
    ("Watermark ratcheted", "watermark", r"^Watermark ratcheted to (?P<iso>\S+)"),
    ("Watermark advanced", "watermark", r"^Watermark advanced \(no deals saved\) to (?P<iso>\S+)"),
    ("Step 2 Complete", "found", r"^Step 2 Complete: Found (?P<items>\d+) new deals"),
    ("Step 6 Complete", "upserted", r"^Step 6 Complete: Successfully upserted/updated (?P<items>\d+) rows"),
    ("Stop Trigger", "stop_trigger", r"^Stop Trigger: Deal (?P<reason>\S+)"),
    ("Task Complete: Processed", "ingest_complete",
     r"^Task Complete: Processed (?P<scanned>\d+) scanned, upserted (?P<items>\d+)"),
    ("Mid Refill Rate", "rate_adjust", rf"^Mid Refill Rate \((?P<rate>{N})/min\)\. Reducing SCAN_BATCH_SIZE to (?P<items>\d+)"),
    ("Task handler raised", "worker_lost", r"^Task handler raised error: (?P<reason>\w+)"),
    ("Task ", "celery_task",
     r"^Task (?P<task>[\w.]+)\[(?P<tid>[\w\-]+)\] (?P<what>received|succeeded|raised|retry|failed)"
     rf"(?: in (?P<secs>{N})s)?"),
]
KEYWORDS = "|".join(re.escape(p) for p, _, _ in TEMPLATES if p != "Task ") + \
    r"|Task [\w.]+\[[\w\-]+\] (?:received|succeeded|raised|retry|failed)"
# A token-story line: a known prefix, maybe Celery's task-logger "name[id]: ", then a template's
# start. Anchored, so RE2 rejects a line at its message's first bytes instead of scanning it all.
TOKEN_LINE = (rf"^(?:\[{TS}: [A-Z]+/[\w.\-]+\] |{TS} - (?:[\w.]+ - )?(?:{LEVELS}) - |(?:{LEVELS}):[\w.]+:)"
              rf"(?:[\w.]+\[[\w\-]+\]: )?(?:{KEYWORDS})")
_TEMPLATE_BY_NAME = {name: (prefix, rx) for prefix, name, rx in TEMPLATES}
_FIELDS = ("balance", "target", "wait", "cost", "consumed", "left", "rate", "items", "threshold", "page",
           "chunk", "estimate", "limit", "secs", "scanned")
_TEXT_FIELDS = ("task", "tid", "what", "reason", "iso")

# Extra fields kept as JSON in ``detail``, for the few templates where they matter.
DETAIL_FIELDS = {"backfill_resume": ("page", "chunk"), "backfill_saved": ("page", "chunk"),
                 "insufficient_tokens": ("limit",), "task_paused": ("reason",), "stop_trigger": ("reason",),
                 "watermark": ("iso",), "watermark_loaded": ("iso",), "ingest_complete": ("scanned",),
                 "worker_lost": ("reason",)}

# Legacy module -> task, for lines whose logger names their task's module.
MODULE_TASKS = {"keepa_deals.simple_task": "update_recent_deals", "keepa_deals.backfiller": "backfill_deals",
                "keepa_deals.smart_ingestor": "smart_ingestor"}

_NUMERIC = ("time", "balance", "target", "wait", "cost", "consumed", "tokens_left", "refill_rate", "items",
            "threshold", "line")
COLUMNS = ["time", "source", "line", "stream", "process", "task", "event", "kind", "balance", "target", "wait",
           "cost", "consumed", "tokens_left", "refill_rate", "items", "threshold", "detail"]


def short_task(name):
    """'keepa_deals.simple_task.update_recent_deals' -> 'update_recent_deals' (…smart_ingestor.run -> smart_ingestor)."""
    if name is None or name != name:
        return None
    parts = str(name).split(".")
    if parts[-1] == "run" and len(parts) > 1:
        return parts[-2]
    return parts[-1]


_EVENT_OF = {
    "wait_loop": "wait", "tokens_recovered": "grant", "heartbeat": "heartbeat", "priority_pass": "grant",
    "recharge_enter": "wait", "recharge_wait": "heartbeat", "recharge_exit": "grant",
    "request_blocked": "abort", "zero_tokens": "wait", "low_tokens": "wait", "token_sync": "sync",
    "sync_skipped": "sync_skipped", "fetched": "spend", "batch_call": "spend", "light_call": "spend",
    "error_429": "429", "token_status": "sync", "backfill_resume": "resume", "backfill_saved": "checkpoint",
    "task_paused": "abort", "watermark_loaded": "watermark_loaded", "watermark": "watermark",
    "found": "found", "upserted": "upsert", "stop_trigger": "stop_trigger", "ingest_complete": "run_finish",
    "rate_adjust": "rate_adjust", "worker_lost": "error", "insufficient_tokens": "wait",
    "task_line": "run_start", "celery_task": "received",
}
# Events and template kinds travel as small integer codes until the frame is built.
EVENT_NAMES = sorted(set(_EVENT_OF.values()) | {"skip", "run_finish", "abort"})
_EV = {name: i for i, name in enumerate(EVENT_NAMES)}
KIND_NAMES = list(dict.fromkeys([name for _, name, _ in TEMPLATES] + ["keepa_ops"]))
_KIND = {name: i for i, name in enumerate(KIND_NAMES)}


def _event_of(kind: str, g: dict) -> np.ndarray:
    """Template name + captured groups -> event codes (into EVENT_NAMES), vectorised."""
    n = len(next(iter(g.values()))) if g else 0
    ev = np.full(n, _EV[_EVENT_OF[kind]], dtype=np.int16)
    if kind == "insufficient_tokens":
        ev[~pd.isna(g["limit"])] = _EV["abort"]
    elif kind == "task_line":
        what = g["what"]
        ev[what == "finished"] = _EV["run_finish"]
        ev[what == "is already running"] = _EV["skip"]
    elif kind == "celery_task":
        what = g["what"]
        ev[np.isin(what, ["succeeded", "raised", "failed"])] = _EV["run_finish"]
        ev[what == "retry"] = _EV["abort"]
    return ev


def _to_np(arr: pa.Array, numeric: bool, fn=None):
    """Captured bytes -> float64 (NaN) or object (None); a group that did not take part is ''.

    Text is dictionary-encoded first, so each distinct value becomes a Python object
    once (and ``fn`` runs once per distinct value), however many rows share it.
    """
    s = pc.cast(arr, pa.string())
    s = pc.if_else(pc.equal(pc.utf8_length(s), 0), pa.scalar(None, pa.string()), s)
    if numeric:
        return pc.cast(s, pa.float64()).to_numpy(zero_copy_only=False)
    enc = pc.dictionary_encode(s)
    values = enc.dictionary.to_pylist()
    if fn is not None:
        values = [fn(v) for v in values]
    lookup = np.asarray(values + [None], dtype=object)
    idx = pc.fill_null(enc.indices, len(values)).to_numpy(zero_copy_only=False)
    return lookup[idx]


def _parse_times(ts: pa.Array) -> np.ndarray:
    s = pc.cast(ts, pa.string())
    sec = pc.strptime(pc.utf8_slice_codeunits(s, 0, 19), format="%Y-%m-%d %H:%M:%S", unit="ms", error_is_null=True)
    ms = pc.cast(pc.utf8_slice_codeunits(s, 20, 23), pa.int64())
    out = pc.add(pc.cast(sec, pa.int64()), ms)
    return out.to_numpy(zero_copy_only=False).astype("float64")


def _lines(data: bytes):
    """Yield (first line number, Arrow binary array of lines incl. their newline) per chunk."""
    start, line0, n = 0, 1, len(data)
    view = memoryview(data)
    while start < n:
        end = min(n, start + CHUNK)
        if end < n:
            nl = data.rfind(b"\n", start, end)
            end = nl + 1 if nl >= start else data.find(b"\n", end) + 1 or n
        chunk = view[start:end]
        buf = np.frombuffer(chunk, np.uint8)
        nls = np.flatnonzero(buf == 10)
        offs = np.empty(len(nls) + 2, np.int32)
        offs[0] = 0
        offs[1:len(nls) + 1] = nls + 1
        count = len(nls) + (1 if len(nls) == 0 or nls[-1] + 1 < len(chunk) else 0)
        offs[count] = len(chunk)
        arr = pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(offs[:count + 1]), pa.py_buffer(chunk)])
        yield line0, arr
        line0 += count
        start = end


@dataclass
class ParsedLog:
    """What was read: ``events`` (typed DataFrame), ``stats`` and a sample of skipped lines."""

    events: pd.DataFrame
    stats: dict
    skipped: pd.DataFrame
    files: pd.DataFrame = field(default=None)

    def read_table(self):
        """What was read, per file and in total: lines, token events, skipped."""
        import os

        t = self.files.assign(file=self.files["file"].map(os.path.basename))[
            ["file", "bytes", "lines", "events", "skipped", "truncated"]]
        total = {"file": "total", "bytes": int(t["bytes"].sum()), "lines": self.stats["lines"],
                 "events": self.stats["events"], "skipped": self.stats["skipped"],
                 "truncated": bool(t["truncated"].any())}
        return pd.concat([t, pd.DataFrame([total])], ignore_index=True)

    def task_names(self) -> list[str]:
        return sorted(t for t in self.events["task"].dropna().unique())

    def timeline(self, freq: str = "1min") -> pd.DataFrame:
        """Observed balance (and Keepa's tokensLeft) over time, plus a time-interpolated series."""
        ev = self.events
        obs = ev["tokens_left"].where(ev["tokens_left"].notna(), ev["balance"])
        df = pd.DataFrame({"time": ev["time"], "observed": obs, "task": ev["task"], "event": ev["event"]})
        df = df.dropna(subset=["time", "observed"]).sort_values("time")
        if df.empty:
            return df.assign(interpolated=pd.Series(dtype="float64"))
        s = df.groupby("time")["observed"].last()
        grid = pd.date_range(s.index.min().floor(freq), s.index.max().ceil(freq), freq=freq)
        interp = s.reindex(s.index.union(grid)).interpolate(method="time").reindex(grid)
        out = pd.DataFrame({"time": grid, "interpolated": interp.to_numpy()})
        return pd.concat([df, out], ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)

    def waits(self) -> pd.DataFrame:
        """One row per wait interval: task, start, end, target, how it ended."""
        from .diagnose import wait_intervals

        return wait_intervals(self.events)


def _json_time_ms(ts) -> float:
    try:
        return pd.Timestamp(ts).value / 1e6 if ts else np.nan
    except (ValueError, TypeError):
        return np.nan


def _json_events(lines: list[tuple[str, int, bytes]]):
    rows = []
    bad = []
    for src, ln, raw in lines:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or "event" not in d:
                raise ValueError
        except ValueError:
            bad.append((src, ln, raw))
            continue
        detail = {k: v for k, v in d.items() if k not in ("ts", "t", "event", "task", "balance", "target", "cost",
                                                         "items", "wait_s")}
        ev = d.get("event")
        cost = d.get("cost")
        rows.append({
            "time": _json_time_ms(d.get("ts")),
            "source": src, "line": ln, "process": None, "task": d.get("task"), "event": ev, "kind": "keepa_ops",
            "balance": d.get("balance"), "target": d.get("target"), "wait": d.get("wait_s"),
            "cost": cost, "consumed": cost if ev in ("spend", "429") else None,
            "tokens_left": d.get("balance") if ev in ("spend", "429", "sync") else None,
            "refill_rate": detail.get("refill_rate"), "items": d.get("items"), "threshold": None,
            "detail": json.dumps(detail) if detail else None,
        })
    return rows, bad


def parse_logs(paths, keep_skipped: int = 1000) -> ParsedLog:
    """Parse log files/directories into a ``ParsedLog``. Never raises on content."""
    sources = read_sources(paths)
    parts, json_lines, skipped_rows, file_rows = [], [], [], []
    stats = {"files": len(sources), "bytes": 0, "lines": 0, "events": 0, "other": 0, "continuation": 0,
             "blank": 0, "skipped": 0, "json": 0, "truncated_files": 0, "partial_last_lines": 0}
    for file_no, src in enumerate(sources):
        name = str(src.path)
        stats["bytes"] += len(src.data)
        stats["truncated_files"] += int(src.truncated)
        if src.data and not src.data.endswith(b"\n"):
            stats["partial_last_lines"] += 1
        fstat = {"file": name, "stream": src.stream, "bytes": len(src.data), "lines": 0, "events": 0,
                 "skipped": 0, "truncated": src.truncated}
        chunks = list(_lines(src.data))
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            results = list(pool.map(lambda c, n=name, s=src.stream: _chunk(c[1], c[0], n, s), chunks))
        for (line0, arr), r in zip(chunks, results):
            for k in ("lines", "other", "continuation", "blank"):
                stats[k] += r[k]
            fstat["lines"] += r["lines"]
            json_lines.extend(r["json"])
            bad = list(r["bad"]) + [int(i) for i in r["failed"]]
            stats["skipped"] += len(bad)
            fstat["skipped"] += len(bad)
            room = keep_skipped - len(skipped_rows)
            for i in sorted(bad)[:max(0, room)]:
                v = arr[i].as_py()
                skipped_rows.append((name, line0 + i, v[:300].decode("utf-8", "replace").rstrip("\r\n")))
            if r["part"] is not None:
                fstat["events"] += len(r["part"]["line"])
                r["part"]["_file"] = np.full(len(r["part"]["line"]), file_no, dtype="float64")
                parts.append(r["part"])
        file_rows.append(fstat)
    if json_lines:
        rows, bad = _json_events(json_lines)
        stats["json"] = len(rows)
        stats["skipped"] += len(bad)
        for s, ln, raw in bad[:max(0, keep_skipped - len(skipped_rows))]:
            skipped_rows.append((s, ln, raw[:300].decode("utf-8", "replace").rstrip("\r\n")))
        if rows:
            jd = pd.DataFrame(rows)
            jd["stream"] = jd["source"]
            order = {str(src.path): i for i, src in enumerate(sources)}
            for src_name, g in jd.groupby("source", sort=False):
                part = {c: g[c].to_numpy() if c in g else np.full(len(g), None) for c in COLUMNS}
                part["source"] = part["stream"] = src_name
                part["event"] = g["event"].to_numpy(dtype=object)   # names: mapped to codes in _frame
                part["kind"] = np.full(len(g), _KIND["keepa_ops"], dtype=np.int16)
                part["_file"] = np.full(len(g), order[src_name], dtype="float64")
                parts.append(part)
    events = _frame(parts)
    stats["events"] = len(events)
    skipped = pd.DataFrame(skipped_rows, columns=["source", "line", "text"])
    return ParsedLog(events, stats, skipped, pd.DataFrame(file_rows))


def _chunk(arr: pa.Array, line0: int, name: str, stream: str) -> dict:
    """Classify every line of one chunk; extract the token-story lines."""
    n = len(arr)
    blank = pc.and_(pc.less_equal(pc.binary_length(arr), 2), pc.match_substring_regex(
        pc.binary_slice(arr, 0, 2), r"^\s*$"))
    is_json = pc.equal(pc.binary_slice(arr, 0, 1), pa.scalar(b"{", pa.binary()))
    prefix_ok = pc.match_substring_regex(arr, PREFIX_ANY)
    kw = pc.match_substring_regex(arr, TOKEN_LINE)
    rest = pc.invert(pc.or_(pc.or_(prefix_ok, is_json), blank))
    cont = pc.and_(rest, pc.match_substring_regex(arr, CONTINUATION))
    bad = pc.and_(rest, pc.invert(cont))
    n_kw = pc.sum(kw).as_py() or 0
    out = {"lines": n, "other": (pc.sum(prefix_ok).as_py() or 0) - n_kw, "continuation": pc.sum(cont).as_py() or 0,
           "blank": pc.sum(blank).as_py() or 0, "json": [], "bad": [], "failed": [], "part": None}
    if pc.sum(is_json).as_py():
        idx = np.flatnonzero(is_json.to_numpy(zero_copy_only=False))
        out["json"] = [(name, line0 + int(i), v) for i, v in zip(idx, arr.take(pa.array(idx)).to_pylist())]
    if pc.sum(bad).as_py():
        out["bad"] = np.flatnonzero(bad.to_numpy(zero_copy_only=False)).tolist()
    if n_kw:
        out["part"], out["failed"] = _extract(arr, kw, name, stream, line0)
    return out


def _extract(arr: pa.Array, mask, source: str, stream: str, line0: int) -> dict:
    """Capture prefix, task-logger and template fields for the token-story lines."""
    idx_all = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    sel = arr.take(pa.array(idx_all))
    n = len(sel)
    ts_ms = np.full(n, np.nan)
    process = np.full(n, None, dtype=object)
    logger = np.full(n, None, dtype=object)  # the task of the logger's module, if it names one
    first = pc.binary_slice(sel, 0, 1)
    is_celery = pc.equal(first, pa.scalar(b"[", pa.binary())).to_numpy(zero_copy_only=False)
    is_basic = pc.match_substring_regex(first, r"^\d").to_numpy(zero_copy_only=False)
    fmt_of = np.where(is_celery, 0, np.where(is_basic, 1, 2))
    msgs = pa.nulls(n, pa.binary())
    msg_chunks = {}
    for code, fmt in enumerate(("celery", "basic", "default")):
        where = np.flatnonzero(fmt_of == code)
        if not len(where):
            continue
        sub = sel.take(pa.array(where))
        if fmt == "celery":
            # "[ts: LEVEL/process] msg", shape guaranteed by PREFIX_ANY: split instead of capturing
            # (an RE2 capture spanning the whole message is the parser's single largest cost).
            halves = pc.split_pattern(sub, "] ", max_splits=1)
            head = pc.list_element(halves, 0)
            ts_ms[where] = _parse_times(pc.binary_slice(head, 1, 24))
            process[where] = _to_np(pc.list_element(pc.split_pattern(head, "/", max_splits=1), 1), False)
            msg_chunks[code] = (where, pc.list_element(halves, 1))
            continue
        st = pc.extract_regex(sub, FORMATS[fmt])
        if fmt != "default":
            ts_ms[where] = _parse_times(st.field("ts"))
        logger[where] = _to_np(st.field("logger"), False, MODULE_TASKS.get)
        msg_chunks[code] = (where, st.field("msg"))
    order = np.concatenate([w for w, _ in msg_chunks.values()])
    msgs = pa.concat_arrays([m for _, m in msg_chunks.values()])
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    msgs = msgs.take(pa.array(inv))
    # Celery's task-logger variant: "task_name[task_id]: message"
    explicit = np.full(n, None, dtype=object)
    tl = pc.match_substring_regex(msgs, r"^[\w.]+\[[\w\-]+\]: ").to_numpy(zero_copy_only=False)
    if tl.any():
        w = np.flatnonzero(tl)
        st = pc.extract_regex(msgs.take(pa.array(w)), TASK_LOGGER)
        explicit[w] = _to_np(st.field("tl_task"), False, short_task)
        rest = st.field("rest")
        pieces = msgs.to_pylist()
        for j, r in zip(w, rest.to_pylist()):
            pieces[j] = r
        msgs = pa.array(pieces, pa.binary())
    out = {"detail": np.full(n, None, dtype=object), "event": np.full(n, -1, dtype=np.int16),
           "kind": np.full(n, -1, dtype=np.int16)}
    for c in ("balance", "target", "wait", "cost", "consumed", "tokens_left", "refill_rate", "items", "threshold"):
        out[c] = np.full(n, np.nan)
    enc = pc.dictionary_encode(pc.binary_slice(msgs, 0, 32))
    uniq = enc.dictionary.to_pylist()
    inverse = enc.indices.to_numpy(zero_copy_only=False)
    tmpl_of_key = []
    for k in uniq:
        name = None
        for prefix, tname, _ in TEMPLATES:
            if k is not None and k.startswith(prefix.encode()):
                name = tname
                break
        tmpl_of_key.append(name)
    tmpl = np.asarray([_KIND[t] if t else -1 for t in tmpl_of_key], dtype=np.int16)[inverse]
    order = np.argsort(tmpl, kind="stable")  # rows grouped by template, each group in line order
    bounds = np.searchsorted(tmpl[order], np.arange(len(KIND_NAMES) + 1))
    valid = np.zeros(n, bool)
    for tname in dict.fromkeys(t for t in tmpl_of_key if t):
        k = _KIND[tname]
        w = order[bounds[k]:bounds[k + 1]]
        rx = _TEMPLATE_BY_NAME[tname][1]
        st = pc.extract_regex(msgs.take(pa.array(w)), rx)
        ok = st.is_valid().to_numpy(zero_copy_only=False)
        w, st = w[ok], st.filter(pa.array(ok))
        if not len(w):
            continue
        names = {st.type.field(i).name for i in range(st.type.num_fields)}
        wanted = set(_FIELDS) | {"task", "what"} | set(DETAIL_FIELDS.get(tname, ()))
        g = {f: (_to_np(st.field(f), False, short_task if f == "task" else None) if f in _TEXT_FIELDS
                 else _to_np(st.field(f), True)) for f in names & wanted}
        if "wait2" in names:
            w2 = _to_np(st.field("wait2"), True)
            g["wait"] = np.where(np.isnan(g["wait"]), w2, g["wait"])
        if "target2" in names:
            t2 = _to_np(st.field("target2"), True)
            g["target"] = np.where(np.isnan(g["target"]), t2, g["target"])
        out["event"][w] = _event_of(tname, g)
        out["kind"][w] = _KIND[tname]
        for f in ("balance", "target", "wait", "cost", "consumed", "threshold", "items"):
            if f in g:
                out[f][w] = g[f]
        if "left" in g:
            out["tokens_left"][w] = g["left"]
        if "rate" in g:
            out["refill_rate"][w] = g["rate"]
        if "task" in g:
            explicit[w] = g["task"]
        details = {k: g[k] for k in DETAIL_FIELDS.get(tname, ()) if k in g}
        if details:
            present = np.zeros(len(w), bool)
            for v in details.values():
                present |= ~pd.isna(v)
            for i in np.flatnonzero(present):
                out["detail"][w[i]] = json.dumps({k: (v[i].item() if hasattr(v[i], "item") else v[i])
                                                  for k, v in details.items() if not pd.isna(v[i])})
        valid[w] = True
    if "token_status" in tmpl_of_key:
        w = np.flatnonzero((tmpl == _KIND["token_status"]) & valid)
        st = pc.extract_regex(msgs.take(pa.array(w)), rf"refillRate'?\"?\s*[:=]\s*(?P<rate>{N})")
        out["refill_rate"][w] = _to_np(st.field("rate"), True)
    explicit = np.where(pd.isna(explicit), logger, explicit)  # logger holds its module's task
    keep = valid
    failed = idx_all[~valid]
    out["time"] = ts_ms
    out["source"] = source   # one value per part: expanded as codes in _frame
    out["line"] = (idx_all + line0).astype(np.int64)
    out["stream"] = stream
    out["process"] = process
    out["task"] = explicit
    return {c: (v[keep] if isinstance(v, np.ndarray) else v) for c, v in out.items()}, failed


_CATEGORIES = ("source", "stream", "process", "task", "event", "kind")


def _categorical(values: np.ndarray) -> pd.Categorical:
    """Object array -> Categorical with plain object categories (no per-row string conversion)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return pd.Categorical.from_codes(codes, categories=pd.Index(np.asarray(uniques, dtype=object), dtype=object))


def _frame(parts: list[dict]) -> pd.DataFrame:
    """Concatenate the extracted parts into the typed events DataFrame, in time order."""
    if not parts:
        parts = [{**{c: np.array([], dtype="float64" if c in _NUMERIC else object) for c in COLUMNS + ["_file"]},
                  "source": "", "stream": "", "event": np.array([], np.int16), "kind": np.array([], np.int16)}]
    sizes = [len(p["line"]) for p in parts]
    cols = {"_file": np.concatenate([np.asarray(p["_file"], dtype="float64") for p in parts])}
    for c in COLUMNS:
        if c in ("source", "stream"):
            names = list(dict.fromkeys(p[c] for p in parts))
            codes = np.repeat([names.index(p[c]) for p in parts], sizes)
            cols[c] = pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object))
        elif c == "event":
            event_names = list(EVENT_NAMES)
            arrays = []
            for p in parts:
                e = p["event"]
                if e.dtype == object:  # JSON lines: our own event names, maybe new ones
                    for name in dict.fromkeys(e):
                        if name not in event_names:
                            event_names.append(name)
                    lookup = {name: i for i, name in enumerate(event_names)}
                    e = np.asarray([lookup[x] for x in e], dtype=np.int16)
                arrays.append(e.astype(np.int16))
            cols[c] = pd.Categorical.from_codes(np.concatenate(arrays),
                                                categories=pd.Index(event_names, dtype=object))
        elif c == "kind":
            cols[c] = pd.Categorical.from_codes(np.concatenate([p[c] for p in parts]).astype(np.int16),
                                                categories=pd.Index(KIND_NAMES, dtype=object))
        elif c in _NUMERIC:
            cols[c] = np.concatenate([np.asarray(p[c], dtype="float64") for p in parts])
        elif c in _CATEGORIES:
            cols[c] = _categorical(np.concatenate([np.asarray(p[c], dtype=object) for p in parts]))
        else:
            cols[c] = np.concatenate([np.asarray(p[c], dtype=object) for p in parts])
    df = pd.DataFrame(cols)
    df["time"] = pd.to_datetime(df["time"], unit="ms").astype("datetime64[ms]")
    df["items"] = pd.array(np.where(np.isnan(cols["items"]), np.nan, np.round(cols["items"])), dtype="Float64") \
        .astype("Int64")
    df["line"] = df["line"].astype("int64")
    df["detail"] = df["detail"].astype("string")
    # read order: a rotated set oldest file first, then line; JSON lines slot into their file
    order = np.lexsort((df["line"].to_numpy(), df.pop("_file").to_numpy()))
    df = df.iloc[order].reset_index(drop=True)
    # Python's default format has no time: carry the neighbours' time within the stream.
    if df["time"].isna().any():
        df["time"] = df.groupby("stream", observed=True)["time"].transform(lambda s: s.ffill().bfill())
    df = _attribute(df)
    t = df["time"].to_numpy().astype("datetime64[ms]").astype("int64")
    order = np.lexsort((df["line"].to_numpy(), df["stream"].cat.codes.to_numpy(), t))
    return df.iloc[order].reset_index(drop=True)


def _attribute(df: pd.DataFrame) -> pd.DataFrame:
    """Give each line without a task the task its process is running (see module doc).

    Within one (stream, process), a worker's start line opens a segment and its finish
    line closes it; every line of a segment belongs to the task the segment names.
    """
    if df.empty:
        return df
    proc_codes = df["process"].cat.codes.to_numpy()
    mainproc = np.flatnonzero(df["process"].cat.categories == "MainProcess")
    worker = proc_codes != (mainproc[0] if len(mainproc) else -2)
    ev = df["event"]
    starts = ((ev == "run_start").to_numpy() & worker).astype(np.int64)
    ends = ((ev == "run_finish").to_numpy() & worker).astype(np.int64)
    key = df["stream"].cat.codes.to_numpy().astype(np.int64) * 100_003 + proc_codes
    g = pd.DataFrame({"k": key, "s": starts, "e": ends})
    grp = g.groupby("k", sort=False)
    seg = grp["s"].cumsum().to_numpy() + grp["e"].cumsum().to_numpy() - ends
    codes = df["task"].cat.codes.to_numpy().astype("float64")
    codes[codes < 0] = np.nan
    explicit = np.where((ev == "skip").to_numpy(), np.nan, codes)  # a skip names a task NOT running here
    segment = (key << 32) + seg  # one int64 per (stream, process, segment): a single-key groupby
    seg_first = pd.Series(explicit).groupby(segment, sort=False).transform("first").to_numpy()
    filled = np.where(np.isnan(codes), seg_first, codes)
    cats = df["task"].cat.categories
    df["task"] = pd.Categorical.from_codes(np.where(np.isnan(filled), -1, filled).astype(np.int64),
                                           categories=cats)
    return df
