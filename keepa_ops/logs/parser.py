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

* ``write_parquet(paths, out)`` reads back as ``parse_logs(paths).events``.

Speed: ``linescan`` sorts and extracts every line in one pass of C (two threads, one
16 MB range each); only the token lines' values ever become Python objects, and text
values only once per distinct value.

Memory: a file is read 64 MB at a time, and each range keeps only its events' columns
(mostly-empty numbers as their present rows). ``_Assembled`` orders them and attributes
tasks on seven key columns; ``write_parquet`` then gathers the rest a million events at a
time, so it never holds the frame.
"""
from __future__ import annotations

import json
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import scanner
from .scanner import Template
from .sources import list_sources
from ..diagnosis.columns import by_name, codes
from ..diagnosis.readings import observed_balance

CHUNK = 16 << 20
THREADS = 2

T = Template
# The token story's messages (the legacy pipeline's log formats), first matching prefix wins.
TEMPLATES = [
    T("Insufficient tokens", "insufficient_tokens", (
        ("wait", "Insufficient tokens (Current: {balance}, Target: {target}). Waiting for {wait}s"),
        ("wait", "Insufficient tokens (Current: {balance}, Target: {target}). Waiting"),
        ("abort", "Insufficient tokens (Current: {balance}, Target: {target}). Wait {wait}s > {limit}s. Exiting"))),
    T("Entered wait loop", "wait_loop", (
        ("wait", "Entered wait loop. Initial Wait: {wait}s. Target: {target}"),
        ("wait", "Entered wait loop. Estimated Wait: {wait}s to reach {target} tokens"))),
    T("Tokens recovered", "tokens_recovered", (("grant", "Tokens recovered ({balance} >= {target})"),)),
    T("[Heartbeat] Waiting", "heartbeat", (
        ("heartbeat", "[Heartbeat] Waiting for tokens... Current: {balance}. Target: {target}. Remaining: {wait}s"),
        ("heartbeat", "[Heartbeat] Waiting for tokens... Current: {balance}. Target: {target}."))),
    T("Priority Pass", "priority_pass", (("grant", "Priority Pass: allowing small cost {cost}. Balance: {balance}"),)),
    T("Tokens critically low", "recharge_enter", (
        ("wait", "Tokens critically low ({balance} < {threshold}). Entering Recharge Mode until {target}"),)),
    T("Recharge Mode Active", "recharge_wait", (("heartbeat", "Recharge Mode Active (Tokens: {balance}/{target})"),)),
    T("Recharge Mode: ", "recharge_check", (
        ("wait", "Recharge Mode: Tokens critically low ({balance}). Required wait: {wait}s"),
        ("abort", "Recharge Mode: Still critically low after Sync ({balance}). Required wait: {wait}s. Exiting")),
      strict=False),
    T("Burst threshold reached", "recharge_exit", (("grant", "Burst threshold reached ({balance} >= {target})"),)),
    T("Request blocked", "request_blocked", (
        ("abort", "Request blocked: Projected balance {balance} exceeds max deficit {threshold}"),)),
    T("Zero or negative tokens", "zero_tokens", (
        ("wait", "Zero or negative tokens. Have: {balance}. Waiting for {wait} seconds"),)),
    T("Low tokens", "low_tokens", (
        ("wait", "Low tokens (Below Threshold {threshold}). Have: {balance}. Waiting for {wait} seconds to recover "
                 "to {target}"),)),
    T("Token count authoritatively", "token_sync", (
        ("sync", "Token count authoritatively synced from API response. Previous estimate: {estimate}, "
                 "New value: {left}"),)),
    T("Skipping sync_tokens", "sync_skipped", (("sync_skipped", "Skipping sync_tokens"),)),
    T("Fetched ", "fetched", (
        ("spend", "Fetched {items:int} deals. Tokens consumed: {consumed}. Tokens left: {left}"),)),
    T("Batch API call successful", "batch_call", (
        ("spend", "Batch API call successful. Tokens consumed: {consumed}. Tokens left: {left}"),)),
    T("Lightweight batch call", "light_call", (
        ("spend", "Lightweight batch call successful. Tokens consumed: {consumed}. Tokens left: {left}"),)),
    T("429 ERROR", "error_429", (
        ("429", "429 ERROR. Keepa reported {consumed} tokens consumed for this failed call. Tokens left: {left}"),)),
    T("Successfully retrieved token", "token_status", (
        ("sync", "Successfully retrieved token status: {:text}tokensLeft{:sep}{left}"),),
      extras=("{:text}refillRate{:sep}{rate}",)),
    T("--- Task: ", "task_line", (
        ("run_start", "--- Task: {task:word} started"), ("run_finish", "--- Task: {task:word} finished"),
        ("skip", "--- Task: {task:word} is already running"))),
    T("--- Resuming backfill", "backfill_resume", (
        ("resume", "--- Resuming backfill from page {page:int}, chunk {chunk:int}"),)),
    T("--- Backfill state saved", "backfill_saved", (
        ("checkpoint", "--- Backfill state saved. Page: {page:int}, Chunk: {chunk:int}"),)),
    T("--- Task Paused", "task_paused", (("abort", "--- Task Paused: {reason:text}. Releasing lock"),)),
    T("Loaded watermark", "watermark_loaded", (("watermark_loaded", "Loaded watermark: {iso:token}"),)),
    T("Successfully updated watermark", "watermark", (("watermark", "Successfully updated watermark to {iso:token}"),)),
    T("Watermark ratcheted", "watermark", (("watermark", "Watermark ratcheted to {iso:token}"),)),
    T("Watermark advanced", "watermark", (("watermark", "Watermark advanced (no deals saved) to {iso:token}"),)),
    T("Step 2 Complete", "found", (("found", "Step 2 Complete: Found {items:int} new deals"),)),
    T("Step 6 Complete", "upserted", (("upsert", "Step 6 Complete: Successfully upserted/updated {items:int} rows"),)),
    T("Stop Trigger", "stop_trigger", (("stop_trigger", "Stop Trigger: Deal {reason:token}"),)),
    T("Peek complete", "peek_complete", (
        ("peek", "Peek complete: {items:int} of {scanned:int} candidates passed"),), strict=False),
    T("Task Complete: Processed", "ingest_complete", (
        ("run_finish", "Task Complete: Processed {scanned:int} scanned, upserted {items:int}"),)),
    T("Mid Refill Rate", "rate_adjust", (
        ("rate_adjust", "Mid Refill Rate ({rate}/min). Reducing SCAN_BATCH_SIZE to {items:int}"),)),
    T("Low Refill Rate", "rate_adjust", (("rate_adjust", "Low Refill Rate ({rate}/min)"),), strict=False),
    T("Found ", "found", (("found", "Found {items:int} new deals since watermark"),), strict=False),
    # Celery's own lines about its pool: a process that died, a worker that (re)started or stopped
    T("Task handler raised", "worker_lost", (("worker_lost", "Task handler raised error: WorkerLostError"),
                                             ("error", "Task handler raised error: {reason:word}"))),
    T("Process '", "process_exit", (("worker_exit", "Process '{reason:id}' pid:{:int} exited with"),),
      strict=False),
    T("celery@", "worker_ready", (("worker_ready", "celery@{:token} ready"),), strict=False),
    T("worker: ", "worker_stop", (("worker_stop", "worker: {:word} shutdown"),), strict=False),
    T("Received task: ", "celery_task", (("received", "Received task: {task:dotted}[{:id}]"),), strict=False),
    # Celery's own task lines; "Task ..." that is not one of them is an ordinary line.
    # A retry ends the execution on its process; the run comes back after its countdown ("Retry in 5.7s").
    T("Task ", "celery_task", tuple((ev, f"Task {{task:dotted}}[{{:id}}] {what}") for ev, what in (
        ("received", "received"), ("run_finish", "succeeded"), ("run_finish", "raised"),
        ("retry", "retry: Retry in {wait}s"), ("retry", "retry"), ("run_finish", "failed"))), strict=False),
]
del T

# Extra fields kept as JSON in ``detail``, for the few templates where they matter.
DETAIL_FIELDS = {"backfill_resume": ("page", "chunk"), "backfill_saved": ("page", "chunk"),
                 "insufficient_tokens": ("limit",), "task_paused": ("reason",), "stop_trigger": ("reason",),
                 "watermark": ("iso",), "watermark_loaded": ("iso",), "ingest_complete": ("scanned",),
                 "peek_complete": ("scanned",), "worker_lost": ("reason",), "process_exit": ("reason",)}

# Legacy module -> task, for lines whose logger names their task's module.
MODULE_TASKS = {"keepa_deals.simple_task": "update_recent_deals", "keepa_deals.backfiller": "backfill_deals",
                "keepa_deals.smart_ingestor": "smart_ingestor"}

_NUMERIC = ("time", "balance", "target", "wait", "cost", "consumed", "tokens_left", "refill_rate", "items",
            "threshold", "line")
COLUMNS = ["time", "source", "line", "stream", "process", "task", "event", "kind", "balance", "target", "wait",
           "cost", "consumed", "tokens_left", "refill_rate", "items", "threshold", "detail"]
# Event columns filled straight from a template field.
_FROM_FIELD = {"balance": "balance", "target": "target", "wait": "wait", "cost": "cost", "consumed": "consumed",
               "tokens_left": "left", "refill_rate": "rate", "items": "items", "threshold": "threshold"}

# Events and template kinds travel as small integer codes until the frame is built.
EVENT_NAMES = sorted({ev for t in TEMPLATES for ev, _ in t.variants} | {"skip", "run_finish", "abort", "retry"})
KIND_NAMES = list(dict.fromkeys([t.kind for t in TEMPLATES] + ["keepa_ops"]))
_KIND = {name: i for i, name in enumerate(KIND_NAMES)}
PROGRAM = scanner.Program(TEMPLATES, KIND_NAMES, EVENT_NAMES)


def short_task(name):
    """'keepa_deals.simple_task.update_recent_deals' -> 'update_recent_deals' (…smart_ingestor.run -> smart_ingestor)."""
    if name is None or name != name:
        return None
    parts = str(name).split(".")
    if parts[-1] == "run" and len(parts) > 1:
        return parts[-2]
    return parts[-1]


@dataclass
class _Coded:
    """A text column as codes into ``values`` (-1: none): how text travels until the frame."""

    codes: np.ndarray
    values: list

    @classmethod
    def of_scan(cls, codes: np.ndarray, values: list, fn=None, subset: bool = False) -> "_Coded":
        """A scan's text column: ``codes`` into ``values`` (bytes; -1: none). Each distinct value is
        decoded (bad UTF-8 replaced) and passed through ``fn`` once, however many rows share it.
        ``subset``: the codes are some of the column's rows, so values are kept and numbered by
        their first appearance among these rows, as a column of its own would number them."""
        if subset:
            present = codes[codes >= 0]
            used, first = np.unique(present, return_index=True)
            order = used[np.argsort(first, kind="stable")]
            remap = np.full(len(values) + 1, -1, np.int32)
            remap[order] = np.arange(len(order), dtype=np.int32)
            codes, values = remap[codes], [values[k] for k in order.tolist()]
        texts = [v.decode("utf-8", "replace") for v in values]
        if fn is not None:
            texts = [fn(v) for v in texts]
        return cls(codes, texts).compact()   # compact copies the codes: the scan's buffers are reused

    @classmethod
    def of_objects(cls, objs) -> "_Coded":
        codes, uniques = pd.factorize(np.asarray(objs, dtype=object), use_na_sentinel=True)
        return cls(codes.astype(np.int32), list(uniques))

    def compact(self) -> "_Coded":
        """Drop None and duplicate values (``fn`` may map two values to one)."""
        uniq = list(dict.fromkeys(v for v in self.values if v is not None))
        return _Coded(self.recode({v: i for i, v in enumerate(uniq)}), uniq)

    def recode(self, index: dict) -> np.ndarray:
        """Codes into ``index`` (value -> code), which grows with values it lacks."""
        lookup = np.asarray([index.setdefault(v, len(index)) if v is not None else -1 for v in self.values] + [-1],
                            dtype=np.int32)
        return lookup[self.codes]

    def where(self, mask: np.ndarray, other: "_Coded") -> "_Coded":
        """``other`` where ``mask``, else self."""
        index = {}
        mine, theirs = self.recode(index), other.recode(index)
        return _Coded(np.where(mask, theirs, mine), list(index))


@dataclass
class _Sparse:
    """A numeric column that is mostly NaN, as its present rows and their values: how most of a
    part's nine numeric columns travel until the frame (a token line fills two or three of them)."""

    rows: np.ndarray     # int32, ascending
    values: np.ndarray   # float64

    @staticmethod
    def of(rows: np.ndarray, values: np.ndarray, n: int):
        """A copy of the column of ``n`` rows that has ``values`` at ``rows`` (NaN elsewhere): sparse
        if that is smaller (under 2/3 present), else dense."""
        if len(rows) * 3 >= n * 2:
            out = np.full(n, np.nan)
            out[rows] = values
            return out
        return _Sparse(rows.astype(np.int32, copy=True), values.astype(np.float64, copy=True))

    @staticmethod
    def gather(columns: list, sizes: list, offsets: np.ndarray, rows: np.ndarray | None = None,
               span: tuple | None = None) -> np.ndarray:
        """The parts' columns (dense or sparse) as one dense float64 column: the rows ``rows`` of their
        concatenation, or the rows ``span`` = (start, stop), or (neither) all of them."""
        if rows is None:
            start, stop = span or (0, int(offsets[-1]))
            out = np.full(stop - start, np.nan)
            for col, off, n in zip(columns, offsets.tolist(), sizes):
                lo, hi = max(start, off), min(stop, off + n)
                if lo >= hi:
                    continue
                if isinstance(col, _Sparse):
                    a, b = np.searchsorted(col.rows, [lo - off, hi - off])
                    out[col.rows[a:b] + (off - start)] = col.values[a:b]
                else:
                    out[lo - start:hi - start] = col[lo - off:hi - off]
            return out
        out = np.full(len(rows), np.nan)
        part = np.searchsorted(offsets, rows, "right") - 1
        by_part = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[by_part], np.arange(len(columns) + 1)).tolist()
        for k, col in enumerate(columns):
            sel = by_part[bounds[k]:bounds[k + 1]]
            if not len(sel):
                continue
            local = rows[sel] - offsets[k]
            if not isinstance(col, _Sparse):
                out[sel] = col[local]
                continue
            pos = _positions(col.rows, local)
            hit = pos >= 0
            out[sel[hit]] = col.values[pos[hit]]
        return out


def _positions(index: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of ``wanted`` stands in the ascending ``index`` (-1: not in it)."""
    if not len(index):
        return np.full(len(wanted), -1, np.int64)
    pos = np.minimum(np.searchsorted(index, wanted), len(index) - 1)
    return np.where(index[pos] == wanted, pos, -1)


def _newline(data: np.ndarray, start: int, end: int, backward: bool) -> int:
    """The position of the last newline in ``data[start:end]`` (``backward``) or the first, or -1;
    looked for a window at a time, so a short search reads only what it must."""
    step = 1 << 16
    while start < end:
        lo, hi = (max(start, end - step), end) if backward else (start, min(end, start + step))
        at = np.flatnonzero(data[lo:hi] == 10)
        if len(at):
            return lo + int(at[-1] if backward else at[0])
        end, start = (lo, start) if backward else (end, hi)
        step *= 4
    return -1


def _ranges(data):
    """(start, end) of CHUNK-sized pieces of ``data`` (any bytes-like) that end at a newline (or the end)."""
    buf = np.frombuffer(data, np.uint8)
    start, n = 0, len(buf)
    while start < n:
        end = min(n, start + CHUNK)
        if end < n:
            nl = _newline(buf, start, end, backward=True)
            end = nl + 1 if nl >= 0 else _newline(buf, end, n, backward=False) + 1 or n
        yield start, end
        start = end


@dataclass
class ParsedLog:
    """What was read: ``events`` (typed DataFrame), ``stats`` and a sample of skipped lines."""

    events: pd.DataFrame
    stats: dict
    skipped: pd.DataFrame
    files: pd.DataFrame = field(default=None)
    _waits: pd.DataFrame = field(default=None, repr=False, compare=False)

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
        obs = observed_balance(ev)
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
        """One row per wait of each run: task, start, end, target, how it ended (see diagnosis.waits).
        Worked out once per ParsedLog: the notebook's table and its figure ask for the same."""
        from ..diagnosis.runs import attribute
        from ..diagnosis.waits import wait_intervals

        if self._waits is None:
            self._waits = wait_intervals(attribute(self.events))
        return self._waits


def _json_time_ms(ts) -> float:
    try:
        return pd.Timestamp(ts).value / 1e6 if ts else np.nan
    except (ValueError, TypeError):
        return np.nan


def _json_num(v):
    """A JSON number as float; anything else (text, lists, booleans, infinities) as None."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf")
    return float(v) if ok else None


def _json_events(lines: list[tuple[str, int, bytes]]):
    """keepa-ops' own event lines -> rows; a line that is not an object with a text
    ``event`` is bad; a field of the wrong type is treated as absent."""
    rows = []
    bad = []
    for src, ln, raw in lines:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or not isinstance(d.get("event"), str):
                raise ValueError
        except (ValueError, RecursionError):
            bad.append((src, ln, raw))
            continue
        detail = {k: v for k, v in d.items() if k not in ("ts", "t", "event", "task", "balance", "target", "cost",
                                                         "items", "wait_s")}
        ev = d["event"]
        cost, balance = _json_num(d.get("cost")), _json_num(d.get("balance"))
        task = d.get("task")
        rows.append({
            "time": _json_time_ms(d.get("ts")),
            "source": src, "line": ln, "process": None, "task": task if isinstance(task, str) else None,
            "event": ev, "kind": "keepa_ops",
            "balance": balance, "target": _json_num(d.get("target")), "wait": _json_num(d.get("wait_s")),
            "cost": cost, "consumed": cost if ev in ("spend", "429") else None,
            "tokens_left": balance if ev in ("spend", "429", "sync") else None,
            "refill_rate": _json_num(detail.get("refill_rate")), "items": _json_num(d.get("items")),
            "threshold": None, "detail": json.dumps(detail) if detail else None,
        })
    return rows, bad


def _read(paths, keep_skipped: int):
    """Scan every source: (the events assembled in their final order, stats, skipped rows, file rows,
    the number of sources)."""
    notes: list[str] = []
    sources = list_sources(paths, notes)
    parts, json_lines, skipped_rows, file_rows = [], [], [], []
    stats = {"files": len(sources), "bytes": 0, "lines": 0, "events": 0, "other": 0, "continuation": 0,
             "blank": 0, "skipped": 0, "json": 0, "truncated_files": 0, "partial_last_lines": 0}
    pool = queue.SimpleQueue()   # the scan buffers, one set per thread, kept for the whole read
    for _ in range(THREADS):
        pool.put(scanner.Buffers())
    for file_no, src in enumerate(sources):
        name = str(src.path)
        fstat = {"file": name, "stream": src.stream, "bytes": 0, "lines": 0, "events": 0,
                 "skipped": 0, "truncated": False}
        line0 = 1  # the number of the range's first line
        last = b""
        for data, truncated in src.blocks():  # one block of one file in memory at a time
            stats["bytes"] += len(data)
            fstat["bytes"] += len(data)
            fstat["truncated"] = fstat["truncated"] or truncated
            last = bytes(data[-1:]) or last
            results = _scan_file(data, name, src.stream, keep_skipped, pool)
            data = None
            line0 = _take(results, line0, name, file_no, stats, fstat, json_lines, skipped_rows, parts,
                          keep_skipped)
        stats["truncated_files"] += int(fstat["truncated"])
        if last and last != b"\n":
            stats["partial_last_lines"] += 1
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
                part = {c: g[c].to_numpy(dtype="float64") for c in _NUMERIC if c != "line"}
                part["line"] = g["line"].to_numpy(dtype=np.int64)
                part["source"] = part["stream"] = src_name
                part["process"] = _Coded.of_objects(np.full(len(g), None))
                part["task"] = _Coded.of_objects(g["task"].to_numpy(dtype=object))
                part["event"] = g["event"].to_numpy(dtype=object)   # names: mapped to codes in _frame
                part["kind"] = np.full(len(g), _KIND["keepa_ops"], dtype=np.int16)
                detail = g["detail"].to_numpy(dtype=object)
                rows = np.flatnonzero(pd.notna(detail))
                part["detail"] = (rows, list(detail[rows]))
                part["_file"] = order[src_name]
                parts.append(part)
    del pool   # the scan buffers go before the parts are assembled
    _order_by_content(parts, sources, file_rows)
    assembled = _Assembled(parts)
    del parts
    stats["time_outliers"] = len(assembled.outliers)
    stats["time_outlier_lines"] = assembled.outliers[:20]
    stats["skipped_paths"] = notes
    skipped = pd.DataFrame(skipped_rows, columns=["source", "line", "text"])
    return assembled, stats, skipped, pd.DataFrame(file_rows), len(sources)


def parse_logs(paths, keep_skipped: int = 1000) -> ParsedLog:
    """Parse log files/directories into a ``ParsedLog``. Never raises on content."""
    assembled, stats, skipped, files, n_sources = _read(paths, keep_skipped)
    events = assembled.frame(consume=True)
    del assembled
    if n_sources > 1:
        events, stats["duplicate_events"] = _drop_repeated(events)
    stats["events"] = len(events)
    return ParsedLog(events, stats, skipped, files)


ROW_GROUP = 1 << 18   # events per parquet row group written by write_parquet

# How write_parquet encodes the columns (a choice of speed and size; what is read back is the
# same frame either way): times and line numbers ascend, so they are stored as deltas; columns of
# few values (names, targets, costs, details) as dictionaries; numbers of many values (balances,
# waits) plainly, where trying a dictionary first only costs time; min/max statistics, which let
# a reader skip row groups, for time and line, the columns one filters a log by.
PARQUET_OPTIONS = dict(
    use_dictionary=["source", "stream", "process", "task", "event", "kind", "target", "cost", "consumed",
                    "refill_rate", "items", "threshold", "detail"],
    column_encoding={"time": "DELTA_BINARY_PACKED", "line": "DELTA_BINARY_PACKED"},
    write_statistics=["time", "line"])


def write_parquet(paths, out, keep_skipped: int = 1000) -> dict:
    """Parse logs straight into a parquet file of the events frame; returns the stats.

    What is read back (``pd.read_parquet``) is ``parse_logs(paths).events``. The events are
    written ROW_GROUP at a time from the assembled parts, so the whole frame is never in memory:
    a thread encodes one slice (pyarrow lets go of the GIL) while the next is gathered, so at most
    two are held. Of several files (a rotated set, copies), an event repeated from another file is
    left out (``_Assembled.repeated``), as ``parse_logs`` drops it.
    """
    import pyarrow.parquet as pq

    assembled, stats, skipped, files, n_sources = _read(paths, keep_skipped)
    n = len(assembled)
    slices = (assembled.frame(i, i + ROW_GROUP) for i in range(0, max(n, 1), ROW_GROUP))
    stats["events"] = n
    if n_sources > 1:   # an event repeated in another file goes, as parse_logs drops it
        drop = assembled.repeated()
        stats["duplicate_events"] = len(drop)
        if len(drop):
            keep = np.ones(n, bool)
            keep[drop] = False
            keep = np.flatnonzero(keep)
            slices = (assembled.frame(rows=keep[i:i + ROW_GROUP]) for i in range(0, max(len(keep), 1), ROW_GROUP))
            stats["events"] = len(keep)
    writer, pending = None, None
    try:
        with ThreadPoolExecutor(max_workers=1) as encoder:
            for df in slices:
                table = pa.Table.from_pandas(df, preserve_index=False)
                del df
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema, **PARQUET_OPTIONS)
                if pending is not None:
                    pending.result()
                pending = encoder.submit(writer.write_table, table)
                del table
            if pending is not None:
                pending.result()
    finally:
        if writer is not None:
            writer.close()
    return stats


def _order_by_content(parts: list[dict], sources, file_rows: list[dict]) -> None:
    """Read a rotated set in the order of the time in its files, not of their names.

    A file's time is the median of its line times (robust to a stray timestamp); a file
    with none keeps its place by name. Rewrites each part's ``_file`` read-order key.
    """
    members_of = {}
    for src in sources:
        members_of[src.stream] = members_of.get(src.stream, 0) + 1
    times: dict[int, list] = {}
    for p in parts:   # a file alone in its stream has nothing to be ordered against
        if len(p["line"]) and members_of[sources[p["_file"]].stream] > 1:
            times.setdefault(p["_file"], []).append(np.asarray(p["time"], dtype="float64"))
    median = {}
    for n, arrays in times.items():
        t = np.concatenate(arrays)
        t = t[~np.isnan(t)]
        median[n] = float(np.median(t)) if len(t) else None
    streams = list(dict.fromkeys(src.stream for src in sources))
    rank = {}
    for stream in streams:
        members = [n for n, src in enumerate(sources) if src.stream == stream]
        dated = sorted((median[n], n) for n in members if median.get(n) is not None)
        # undated files keep their by-name slot among the dated ones
        slots = iter(n for _, n in dated)
        order = [next(slots) if median.get(n) is not None else n for n in members]
        for n in order:
            rank[n] = len(rank)
    for p in parts:
        if len(p["line"]):
            p["_file"] = rank[p["_file"]]
    for n, row in enumerate(file_rows):
        row["read_order"] = rank.get(n, n)


# What makes two events the same line, whichever file they came from (not the task: that is
# attributed per stream, and a copy that starts mid-run knows less of it).
_CONTENT = ["time", "process", "event", "balance", "target", "wait", "cost", "consumed", "tokens_left",
            "refill_rate", "items", "threshold", "detail"]


def _repeats(events: pd.DataFrame) -> np.ndarray:
    """The positions of the events repeated from another file (overlapping copies, a log beside its
    own rotation); repeats inside one file are not, they are what that file says.

    Only the rows of ``_overlap_rows`` are compared: a repeat has its twin's time."""
    rows = _overlap_rows(events["time"], events["source"])
    if not len(rows):
        return rows
    events = events.iloc[rows]
    # a line without a time (Python's default format) can repeat honestly: only timed lines count
    again = events.duplicated(subset=_CONTENT, keep="first") & events["time"].notna()
    if not again.any():
        return np.array([], np.int64)
    within = events.duplicated(subset=_CONTENT + ["source"], keep="first")
    return rows[(again & ~within).to_numpy()]


def _overlap_rows(time: pd.Series, source: pd.Series) -> np.ndarray:
    """The rows, ascending, whose time lies within the time spans of two files or more.

    Only they can repeat a line of another file: a repeat has the same time as its twin, so that
    time lies in its own file's span and in its twin's. A rotated set's files follow one another,
    so usually no row does, and nothing need be compared."""
    ms = time.to_numpy().view(np.int64)   # NaT is int64's minimum
    files = codes(source)[0]
    spans: dict[int, list] = {}           # file -> [first, last] time, a slice of rows at a time
    for a in range(0, len(ms), ROW_GROUP):
        t, f = ms[a:a + ROW_GROUP], files[a:a + ROW_GROUP]
        timed = t != np.iinfo(np.int64).min
        t, f = t[timed], f[timed]
        for k in np.unique(f).tolist():
            tk = t[f == k]
            lo, hi = int(tk.min()), int(tk.max())
            span = spans.setdefault(k, [lo, hi])
            span[0], span[1] = min(span[0], lo), max(span[1], hi)
    if len(spans) < 2:
        return np.array([], np.int64)
    # sweep the spans' ends (closed: a start before an end at the same time): zones covered twice or more
    ends = sorted([(lo, 0) for lo, _ in spans.values()] + [(hi, 1) for _, hi in spans.values()])
    zones, depth = [], 0
    for t, is_end in ends:
        depth += -1 if is_end else 1
        if not is_end and depth == 2:
            zones.append([t, None])
        elif is_end and depth == 1:
            zones[-1][1] = t
    if not zones:
        return np.array([], np.int64)
    lo, hi = np.asarray([z[0] for z in zones], np.int64), np.asarray([z[1] for z in zones], np.int64)
    out = []   # NaT is before every zone
    for a in range(0, len(ms), ROW_GROUP):  # a slice at a time: no full-length temporaries
        t = ms[a:a + ROW_GROUP]
        k = np.searchsorted(lo, t, "right") - 1
        out.append(a + np.flatnonzero((k >= 0) & (t <= hi[np.maximum(k, 0)])))
    return np.concatenate(out)


def _drop_repeated(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``events`` without its ``_repeats``, and how many went."""
    drop = _repeats(events)
    if not len(drop):
        return events, 0
    keep = np.ones(len(events), bool)
    keep[drop] = False
    return events[keep].reset_index(drop=True), len(drop)


OUTLIER_S = 2 * 86400.0   # a line this far from both its neighbours' times (which agree) is misdated


def _time_outliers(ms: np.ndarray, stream: np.ndarray) -> np.ndarray:
    """Rows (in read order) dated far from the lines around them, like one line stamped 2099.

    ``ms``: int64 milliseconds, int64's minimum (NaT) for a row without a time. A row is an
    outlier when its time jumps more than OUTLIER_S from the previous timed row of its stream
    and jumps back to the next; at a stream's first or last timed row, when its one jump is big
    and the neighbours beyond it agree. A real gap in a log jumps once and stays. Every such
    row borders a big jump, and big jumps are rare: only they are looked at closely.
    """
    bad = np.zeros(len(ms), bool)
    nat = ms == np.iinfo(np.int64).min
    valid = np.flatnonzero(~nat) if nat.any() else None   # None: every row (no index, no copies)
    t, st = (ms, stream) if valid is None else (ms[valid], stream[valid])
    n = len(t)
    if n < 3:
        return bad
    limit = int(OUTLIER_S * 1000)
    found = []                                # jump j goes from timed row j to j + 1; a window at a time
    for lo in range(0, n - 1, 1 << 20):
        hi = min(n - 1, lo + (1 << 20))
        d = t[lo + 1:hi + 1] - t[lo:hi]
        found.append(lo + np.flatnonzero(np.abs(d, out=d) > limit))
    j = np.concatenate(found)
    j = j[st[j] == st[j + 1]]                 # big jumps within one stream
    if not len(j):
        return bad
    big = np.zeros(n + 1, bool)               # big[k]: jump k is big (one spare False past the end)
    big[j] = True

    def same(a, b):                           # rows a and b exist and share a stream
        ok = (a >= 0) & (b < n)
        out = np.zeros(len(a), bool)
        out[ok] = st[a[ok]] == st[b[ok]]
        return out

    out = []
    # in the middle: a big jump in and a big jump back out
    i = j[big[j + 1]] + 1
    out.append(i[np.sign(t[i] - t[i - 1]) != np.sign(t[i + 1] - t[i])])
    # at a stream's first row: one big jump out, then calm between rows that share the stream
    i = j
    first = (i == 0) | ~same(i - 1, i)
    out.append(i[first & ~big[i + 1] & same(i + 1, i + 2)])
    # at a stream's last row: one big jump in, calm before it between rows that share the stream
    i = j + 1
    last = (i == n - 1) | ~same(i, i + 1)
    calm = (i - 2 >= 0) & ~big[np.maximum(i - 2, 0)]
    out.append(i[last & calm & same(i - 2, i - 1)])
    rows = np.unique(np.concatenate(out))
    if valid is None:
        bad[rows] = True
    else:
        bad[valid[rows]] = True
    return bad


def _take(results, line0, name, file_no, stats, fstat, json_lines, skipped_rows, parts, keep) -> int:
    """Fold one block's range results into the totals; returns the number of the next block's first line."""
    for r in results:
        for k in ("lines", "other", "continuation", "blank"):
            stats[k] += r[k]
        fstat["lines"] += r["lines"]
        json_lines.extend((n, line0 + i, raw) for n, i, raw in r["json"])
        bad = r["bad"]
        stats["skipped"] += len(bad)
        fstat["skipped"] += len(bad)
        for i, text in list(zip(bad, r["bad_text"]))[:max(0, keep - len(skipped_rows))]:
            skipped_rows.append((name, line0 + int(i), text))
        if r["part"] is not None:
            r["part"]["line"] += line0
            fstat["events"] += len(r["part"]["line"])
            r["part"]["_file"] = file_no   # the file it came from (its read-order key, see _order_by_content)
            parts.append(r["part"])
        line0 += r["lines"]
    return line0


def _scan_file(data, name: str, stream: str, keep: int, pool: "queue.SimpleQueue") -> list[dict]:
    """Every range of one block, THREADS at a time (the C scan runs without the GIL), each with a
    set of scan buffers from ``pool`` (THREADS of them, reused from block to block)."""
    def one(r):
        buffers = pool.get()
        try:
            return _chunk(data, r[0], r[1], name, stream, keep, buffers)
        finally:
            pool.put(buffers)

    with ThreadPoolExecutor(max_workers=THREADS) as ex:
        return list(ex.map(one, list(_ranges(data))))


def _chunk(data, start: int, end: int, name: str, stream: str, keep: int, buffers=None) -> dict:
    """Classify every line of one range; build the event columns of its token lines (copies: the
    scan is a view of ``buffers``, which the next range reuses).

    Line numbers are relative to the range; the first ``keep`` skipped lines keep their text.
    """
    sc = scanner.scan(data, start, end, PROGRAM, buffers=buffers)
    counts = np.bincount(sc.cls, minlength=len(scanner.CLASS_NAMES))
    out = {"lines": len(sc.cls), "other": int(counts[scanner.OTHER]),
           "continuation": int(counts[scanner.CONTINUATION]), "blank": int(counts[scanner.BLANK]),
           "json": [], "bad": np.flatnonzero((sc.cls == scanner.BAD) | (sc.cls == scanner.FAILED)),
           "part": None}
    out["bad_text"] = [bytes(data[sc.line_start[i]:min(sc.line_start[i + 1], sc.line_start[i] + 300)])
                       .decode("utf-8", "replace").rstrip("\r\n") for i in out["bad"][:keep]]
    if counts[scanner.JSON]:   # copies: the block's buffer is reused
        out["json"] = [(name, int(i), bytes(data[sc.line_start[i]:sc.line_start[i + 1]]))
                       for i in np.flatnonzero(sc.cls == scanner.JSON)]
    if len(sc.line):
        out["part"] = _part(sc, name, stream)
    return out


def _part(sc: scanner.Scan, source: str, stream: str) -> dict:
    """A scan's token lines -> event columns (line numbers still relative to the range)."""
    # copies, not views: the scan is a view of buffers the next range reuses
    n = len(sc.line)
    out = {"time": sc.time_ms.copy(), "source": source, "line": sc.line.astype(np.int64), "stream": stream,
           "process": _Coded.of_scan(*sc.text["process"]), "event": sc.event.copy(), "kind": sc.kind.copy()}
    for col, f in _FROM_FIELD.items():
        out[col] = _Sparse.of(*sc.fields[f], n)
    # the task: the template's own, else Celery's task-logger prefix, else the logger's module
    task = _Coded.of_scan(*sc.text["task_logger"], short_task)
    task = task.where(task.codes < 0, _Coded.of_scan(*sc.text["logger"], MODULE_TASKS.get))
    detail_rows, detail_text = [], []   # the rows that have details, and their JSON texts (arrow arrays)
    capture_codes, capture_values = sc.text["capture"]
    for kind in np.unique(sc.kind):
        kname = KIND_NAMES[kind]
        text_name = PROGRAM.text_field.get(kname)
        if text_name is None and kname not in DETAIL_FIELDS:
            continue
        w = np.flatnonzero(sc.kind == kind)
        capture = _Coded.of_scan(capture_codes[w], capture_values, short_task if text_name == "task" else None,
                                 subset=True)
        if text_name == "task":
            mask = np.zeros(n, bool)
            mask[w] = True
            full = np.full(n, -1, np.int32)
            full[w] = capture.codes
            task = task.where(mask, _Coded(full, capture.values))
        rows, text = _details(kname, text_name, capture, lambda f: sc.field(f, w))
        detail_rows.append(w[rows])
        detail_text.append(text)
    out["task"] = task
    out["detail"] = (np.concatenate(detail_rows or [np.array([], np.int64)]).astype(np.int64),
                     pa.concat_arrays(detail_text) if detail_text else pa.array([], pa.string()))
    return out


def _details(kind: str, text_name: str | None, capture: _Coded, field_of):
    """The DETAIL_FIELDS of one kind's rows as JSON: (rows that have any, their texts as ``json.dumps``
    writes them). ``field_of(name)``: a numeric field over the kind's rows. No per-row Python: each
    distinct value is encoded once, and arrow joins each row's fields."""
    names = DETAIL_FIELDS.get(kind, ())
    cols, present = [], np.zeros(len(capture.codes), bool)
    for f in names:
        if f == text_name:
            codes, values = capture.codes.astype(np.int64), [json.dumps(v) for v in capture.values]
        else:
            x = field_of(f)
            ok = ~np.isnan(x)
            uniq, inv = np.unique(x[ok], return_inverse=True)
            codes = np.full(len(x), -1, np.int64)
            codes[ok] = inv
            values = [json.dumps(float(u)) for u in uniq]
        present |= codes >= 0
        cols.append((f, codes, values))
    rows = np.flatnonzero(present)
    if not len(rows):
        return rows, pa.array([], pa.string())
    pieces = []  # per field: '"name": value' for the rows that have it, null for the others
    for f, codes, values in cols:
        c = codes[rows]
        pieces.append(pa.array([f'"{f}": {v}' for v in values], pa.string()).take(pa.array(c, mask=c < 0)))
    joined = pc.binary_join_element_wise(*pieces, ", ", null_handling="skip")
    text = pc.binary_join_element_wise(pa.scalar("{"), joined, pa.scalar("}"), "")
    return rows, text


def _empty_part() -> dict:
    none = _Coded(np.array([], np.int32), [])
    part = {c: np.array([], dtype="float64") for c in _NUMERIC}
    part.update(source="", stream="", process=none, task=none, event=np.array([], np.int16), line=np.array([], np.int64),
                kind=np.array([], np.int16), detail=(np.array([], np.int64), []), _file=0)
    return part


def _categorical_of(coded: list[_Coded]) -> pd.Categorical:
    index = {}
    codes = np.concatenate([c.recode(index) for c in coded])
    return pd.Categorical.from_codes(codes, categories=pd.Index(list(index), dtype=object))


_KEY = ("time", "source", "line", "stream", "process", "task", "event")   # what ordering and attribution read
_NUMBERS = ("balance", "target", "wait", "cost", "consumed", "tokens_left", "refill_rate", "items", "threshold")


class _Assembled:
    """The parts' events in their final order, without a second copy of them.

    The key columns (``_KEY``), which ordering, the misdated-line fix and task attribution
    read, are built as one frame and put in order: read order (a rotated set oldest file
    first, then line), misdated times dropped and filled from the stream, tasks attributed,
    then time order (lines of one millisecond keep their read order). ``perm`` maps each final
    row to its place in the parts; the other columns (kind, the numbers, detail) stay in the
    parts and are gathered for any range of final rows, so ``frame(a, b)`` is rows a..b of
    ``frame()`` and a writer can go slice by slice. ``outliers``: the ``file:line`` of each line
    re-timed as misdated.
    """

    def __init__(self, parts: list[dict]):
        parts = parts or [_empty_part()]
        self.sizes = [len(p["line"]) for p in parts]
        self.offsets = np.cumsum([0] + self.sizes)
        in_order = _parts_in_read_order(parts)   # the usual case: no sort, not even a look at every row
        cols = {}
        for c in _KEY:
            cols[c] = _key_column(c, parts, self.sizes)
        key = pd.DataFrame(cols, copy=False)
        if in_order:
            perm = None
        else:
            files = np.repeat(np.asarray([p["_file"] for p in parts], np.int32), self.sizes)
            key, perm = _reorder(key, (cols["line"], files), None)
            del files
        del cols
        # A misdated line (a clock jump, 2099) loses its time, reported as file:line ...
        bad = _time_outliers(key["time"].to_numpy().view(np.int64), key["stream"].cat.codes.to_numpy())
        self.outliers = []
        if bad.any():
            self.outliers = [f"{s}:{ln}" for s, ln in zip(key.loc[bad, "source"], key.loc[bad, "line"])]
            key.loc[bad, "time"] = pd.NaT
        # ... and, like a line of Python's default format (no time), takes its neighbours' time in the stream.
        if key["time"].isna().any():
            by_stream = key.groupby("stream", observed=True)["time"]
            key["time"] = by_stream.ffill().fillna(by_stream.bfill())
        key = _attribute(key)
        t = key["time"].to_numpy().view(np.int64)
        self.key, self.perm = _reorder(key, (t,), perm)   # stable: lines of one millisecond keep read order
        # kind and detail once for all; the numbers stay in the parts (the rest of the parts is let go)
        self.kind = np.concatenate([p["kind"] for p in parts]).astype(np.int16)
        self.detail = _details_sorted(parts, self.offsets)
        self.parts = [{c: p[c] for c in _NUMBERS} for p in parts]
        for p in parts:
            p.clear()

    def __len__(self) -> int:
        return len(self.key)

    def frame(self, start: int = 0, stop: int | None = None, rows: np.ndarray | None = None,
              consume: bool = False) -> pd.DataFrame:
        """Final rows ``start``..``stop`` (or the final rows ``rows``, ascending) as the typed events
        frame (index from 0). ``consume``: let each column in the parts go once it is in the frame
        (for the whole frame, built once: never two copies of a column)."""
        n = len(self.key)
        if rows is not None:
            key, at = self.key.iloc[rows], (rows if self.perm is None else self.perm[rows])
            start = stop = None
        else:
            stop = n if stop is None else min(stop, n)
            start = min(start, stop)
            key = self.key if start == 0 and stop == n else self.key.iloc[start:stop]
            at = None if self.perm is None else self.perm[start:stop]   # None: parts' rows start..stop
        cols = {}
        for c in COLUMNS:
            if c in _KEY:
                cols[c] = key[c].array
            elif c == "kind":
                codes = self.kind[start:stop] if at is None else self.kind[at]
                cols[c] = pd.Categorical.from_codes(codes, categories=pd.Index(KIND_NAMES, dtype=object))
            elif c == "detail":
                cols[c] = _detail_of(*self.detail, np.arange(start, stop) if at is None else at)
            else:
                values = _Sparse.gather([p[c] for p in self.parts], self.sizes, self.offsets, at, (start, stop))
                cols[c] = pd.array(np.round(values), dtype="Float64").astype("Int64") if c == "items" else values
                if consume:
                    for p in self.parts:
                        p[c] = None
        if consume:
            self.key, self.kind, self.detail, self.parts = None, None, None, None
        return pd.DataFrame(cols, copy=False)

    def repeated(self) -> np.ndarray:
        """The final rows that are ``_repeats`` of ``frame()``, found without building it: only the
        rows within two files' time spans can repeat (``_overlap_rows``); their content is hashed
        slice by slice, and only those that share a hash with another (every true repeat does) are
        built and compared in full, so a hash collision drops nothing."""
        rows = _overlap_rows(self.key["time"], self.key["source"])
        if not len(rows):
            return rows
        content = np.empty(len(rows), np.uint64)
        for i in range(0, len(rows), ROW_GROUP):
            content[i:i + ROW_GROUP] = pd.util.hash_pandas_object(
                self.frame(rows=rows[i:i + ROW_GROUP])[_CONTENT], index=False).to_numpy()
        shared = rows[pd.Series(content).duplicated(keep=False).to_numpy()]
        if not len(shared):
            return shared
        return shared[_repeats(self.frame(rows=shared))]


def _parts_in_read_order(parts: list[dict]) -> bool:
    """Whether the parts' concatenation is already in read order (file, then line): each part's
    lines ascend, and each part starts after the one before it ends."""
    prev = None
    for p in parts:
        line = p["line"]
        if not len(line):
            continue
        if len(line) > 1 and not (line[1:] > line[:-1]).all():
            return False
        if prev is not None and (p["_file"], line[0]) <= prev:
            return False
        prev = (p["_file"], line[-1])
    return True


def _key_column(c: str, parts: list[dict], sizes: list):
    """Key column ``c`` (one of ``_KEY``) of the parts' concatenation. Each part's own copy goes as
    soon as it is in the key (the source and stream names stay: every part keeps its one name)."""
    if c in ("source", "stream"):
        names = list(dict.fromkeys(p[c] for p in parts))
        codes = np.repeat(np.asarray([names.index(p[c]) for p in parts], np.int32), sizes)
        return pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object))
    if c == "event":
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
            arrays.append(e)
            p[c] = None
        return pd.Categorical.from_codes(np.concatenate(arrays, dtype=np.int16),
                                         categories=pd.Index(event_names, dtype=object))
    if c in ("process", "task"):
        out = _categorical_of([p[c] for p in parts])
        for p in parts:
            p[c] = None
        return out
    if c in ("time", "line"):   # a part at a time: no second copy of the whole
        out = np.empty(sum(sizes), np.int64)
        at = 0
        for p, n in zip(parts, sizes):
            if c == "line":
                out[at:at + n] = p[c]
            else:                # float ms (NaN: none) -> int64 ms (NaT)
                ms = np.asarray(p[c], dtype="float64")
                with np.errstate(invalid="ignore"):
                    out[at:at + n] = ms       # as astype: truncated toward zero
                out[at:at + n][np.isnan(ms)] = np.iinfo(np.int64).min
            p[c] = None
            at += n
        return out.view("datetime64[ms]") if c == "time" else out
    raise KeyError(c)


def _details_sorted(parts: list[dict], offsets: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Every part's detail texts (arrow, or a list from JSON lines) with their rows in the parts'
    concatenation, by row (a part lists its detail rows kind by kind)."""
    at = np.concatenate([p["detail"][0] + off for p, off in zip(parts, offsets)])
    text = pa.concat_arrays([t if isinstance(t, pa.Array) else pa.array(t, pa.string())
                             for t in (p["detail"][1] for p in parts)])
    if len(at) > 1 and (at[1:] < at[:-1]).any():
        order = np.argsort(at, kind="stable")
        at, text = at[order], text.take(pa.array(order))
    return at, text


def _detail_of(at: np.ndarray, text: pa.Array, rows: np.ndarray):
    """The detail column of ``rows`` (null where a row has none), placed by arrow in C."""
    idx = _positions(at, rows)
    return pd.array(text.take(pa.array(idx, mask=idx < 0)), dtype="string")


def _ascending(keys) -> bool:
    """Whether the rows are already in ``keys`` order (last key first, like np.lexsort)."""
    tie = None   # the rows so far equal on the keys looked at (None: all of them)
    for n, k in enumerate(reversed(keys)):   # compared, not subtracted: NaT is int64's minimum and would overflow
        later, earlier = k[1:], k[:-1]
        if (later < earlier).any() if tie is None else (later[tie] < earlier[tie]).any():
            return False
        if n < len(keys) - 1:
            tie = (later == earlier) if tie is None else tie & (later == earlier)
    return True


def _reorder(df: pd.DataFrame, keys, perm):
    """``df`` sorted by ``keys`` (last key first, like np.lexsort), stable, and ``perm`` (None: the
    identity) composed with that order; no copy if already so."""
    if _ascending(keys):   # the usual case, a log in order: no sort, no copy
        return df, perm
    order = np.lexsort(keys)
    return df.iloc[order].reset_index(drop=True), (order if perm is None else perm[order])


def _attribute(df: pd.DataFrame) -> pd.DataFrame:
    """Give each worker's line without a task the task that worker is running (see module doc).

    Within one (stream, process), a worker's start line opens a segment and its finish
    line (or Celery's retry) closes it; every line of a segment belongs to the task the segment names. Lines
    of Celery's MainProcess, and lines that name no process, run no task: left as they are.
    """
    if df.empty:
        return df
    proc_codes = df["process"].cat.codes.to_numpy()
    mainproc = np.flatnonzero(df["process"].cat.categories == "MainProcess")
    worker = (proc_codes >= 0) & (proc_codes != (mainproc[0] if len(mainproc) else -2))
    codes = df["task"].cat.codes.to_numpy().astype(np.int32)
    if not ((codes < 0) & worker).any():
        return df
    # each worker row's (stream, process) as a small integer (-1: no worker), and what its line does
    nproc = len(df["process"].cat.categories)
    group = df["stream"].cat.codes.to_numpy().astype(np.int32) * np.int32(nproc) + proc_codes.astype(np.int32)
    group[~worker] = -1
    # 1 a start, 2 an end (a retry ends one too), 3 a skip
    kind = by_name(df["event"].cat.codes.to_numpy(), list(df["event"].cat.categories),
                   {1: {"run_start"}, 2: {"run_finish", "retry"}, 3: {"skip"}})
    if scanner.NATIVE:
        scanner._linescan.fill_tasks(group, kind, codes, len(df["stream"].cat.categories) * nproc)
    else:
        _fill_tasks(group, kind, codes)
    df["task"] = pd.Categorical.from_codes(codes, categories=df["task"].cat.categories)
    return df


def _fill_tasks(group: np.ndarray, kind: np.ndarray, codes: np.ndarray) -> None:
    """``_linescan.fill_tasks`` in numpy (for builds without the extension): on each group, in read
    order, a segment begins at its first row, at a start and at the row after an end; the rows
    without a task (``codes`` -1) take the first task the segment names, in place."""
    rows = np.flatnonzero(group >= 0)
    if not len(rows):
        return
    order = rows[np.argsort(group[rows], kind="stable")]
    g, k = group[order], kind[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    ends = k == 2
    segment = np.cumsum(new_group | (k == 1) | (np.r_[False, ends[:-1]] & ~new_group)) - 1
    explicit = np.where(k == 3, -1, codes[order])   # a skip names a task NOT running here
    named = np.flatnonzero(explicit >= 0)
    seg_task = np.full(int(segment[-1]) + 1, -1, np.int32)
    first_seg, first_at = np.unique(segment[named], return_index=True)
    seg_task[first_seg] = explicit[named[first_at]]
    fill = codes[order] < 0
    codes[order[fill]] = seg_task[segment[fill]]
