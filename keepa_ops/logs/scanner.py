"""Line scanner: sort every log line into a class, and pull the fields out of token lines.

A message template is text with placeholders, e.g.
``"Insufficient tokens (Current: {balance}, Target: {target}). Waiting for {wait}s"``:

* ``{name}`` a number ``-?\\d+(?:\\.\\d+)?``; ``{name:int}`` digits;
* ``{name:word}`` ``\\w+``, ``{name:dotted}`` ``[\\w.]+``, ``{name:id}`` ``[\\w-]+``,
  ``{name:token}`` no whitespace, ``{name:text}`` as little as possible of one line;
* ``{:sep}`` a dict separator ``'?"?\\s*[:=]\\s*``; an empty name captures nothing.

A template matches at the message's start (after the line's prefix and Celery's optional
``task[id]: ``) and need not reach its end. Numbers land in ``FIELDS`` columns; a variant
may capture one text field (task, reason, iso).

Two implementations give the same answer for every input (tests compare them on
mutated lines): the C extension ``_linescan`` (one pass, no GIL) and ``scan_reference``
(Python's ``re`` over the same templates), used when the extension is not built.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import numpy as np

try:
    from . import _linescan
except ImportError:  # pragma: no cover - a build without a C compiler
    _linescan = None

NATIVE = _linescan is not None

FIELDS = ("balance", "target", "wait", "cost", "consumed", "left", "rate", "items", "threshold", "page", "chunk",
          "limit", "scanned", "estimate")
TEXT_COLUMNS = ("process", "logger", "task_logger", "capture")

# Line classes, as the C code numbers them.
OTHER, TOKEN, FAILED, JSON, BLANK, CONTINUATION, BAD = range(7)
CLASS_NAMES = ("other", "token", "failed", "json", "blank", "continuation", "bad")

_OPS = {"lit": 1, "num": 2, "int": 3, "word": 4, "dotted": 5, "id": 6, "token": 7, "text": 8, "sep": 9}
_TEXT_FIELD = -2
_PLACEHOLDER = re.compile(r"\{(\w*)(?::(\w+))?\}")
_CLASS_RX = {"num": rb"-?\d+(?:\.\d+)?", "int": rb"\d+", "word": rb"[A-Za-z0-9_]+", "dotted": rb"[A-Za-z0-9_.]+",
             "id": rb"[A-Za-z0-9_\-]+", "token": rb"[^\t\n\f\r ]+", "text": rb"[^\r\n]*?",
             "sep": rb"'?\"?[\t\n\f\r ]*[:=][\t\n\f\r ]*"}


@dataclass(frozen=True)
class Template:
    """A message kind: the literal its messages start with, its variants and extras.

    ``variants`` are (event, pattern) tried in order; the first that matches decides the
    event. ``strict``: a message that starts with ``prefix`` but matches no variant is
    malformed (counted as skipped); otherwise it is an ordinary line. ``extras`` are
    patterns (starting with ``{:text}``, so found anywhere) for optional fields.
    """

    prefix: str
    kind: str
    variants: tuple
    strict: bool = True
    extras: tuple = ()


def _pieces(pattern: str):
    """pattern -> [(op, name, literal)]"""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        if m.start() > pos:
            out.append(("lit", None, pattern[pos:m.start()].encode()))
        op = m.group(2) or "num"
        if op not in _OPS or op == "lit":
            raise ValueError(f"template {pattern!r}: unknown placeholder type {op!r}")
        out.append((op, m.group(1) or None, b""))
        pos = m.end()
    if pos < len(pattern):
        out.append(("lit", None, pattern[pos:].encode()))
    return out


def _field_code(op: str, name: str | None) -> int:
    if name is None:
        return -1
    if op in ("num", "int"):
        if name not in FIELDS:
            raise ValueError(f"placeholder {{{name}}}: a number must be one of {', '.join(FIELDS)}")
        return FIELDS.index(name)
    return _TEXT_FIELD


def _regex(pattern: str) -> re.Pattern:
    rx = b""
    for op, name, lit in _pieces(pattern):
        if op == "lit":
            rx += re.escape(lit)
        elif name:
            rx += b"(?P<" + name.encode() + b">" + _CLASS_RX[op] + b")"
        else:
            rx += b"(?:" + _CLASS_RX[op] + b")"
    return re.compile(rx)


@dataclass
class Program:
    """Templates compiled once: bytes for the C scanner, regexes for the reference."""

    templates: list
    kinds: list
    events: list
    code: bytes = field(init=False)
    text_field: dict = field(init=False)   # kind -> the name of its text capture, if any

    def __post_init__(self):
        blobs, nvar, nops, self.text_field = [], 0, 0, {}
        self._rx = []
        for t in self.templates:
            prefix = t.prefix.encode()
            pats = [(self.events.index(ev), p, 0) for ev, p in t.variants] + [(-1, p, 1) for p in t.extras]
            blob = struct.pack("<BH", int(t.strict), len(prefix)) + prefix + struct.pack("<H", len(pats))
            rxs = []
            for ev, p, extra in pats:
                pieces = _pieces(p)
                if extra and (not pieces or pieces[0][0] != "text"):
                    raise ValueError(f"extra pattern {p!r} must start with {{:text}}")
                texts = [n for op, n, _ in pieces if n and op not in ("num", "int")]
                if len(texts) > 1:
                    raise ValueError(f"template {p!r}: at most one text field")
                if texts:
                    self.text_field[t.kind] = texts[0]
                blob += struct.pack("<hhBH", self.kinds.index(t.kind), ev, extra, len(pieces))
                for op, name, lit in pieces:
                    blob += struct.pack("<BbH", _OPS[op], _field_code(op, name), len(lit)) + lit
                nvar += 1
                nops += len(pieces)
                rxs.append((ev, _regex(p), extra))
            blobs.append(blob)
            self._rx.append((prefix, t, rxs))
        self.code = struct.pack("<III", len(self.templates), nvar, nops) + b"".join(blobs)


@dataclass
class Scan:
    """One range of lines: the class of each, and the fields of each token line."""

    line_start: np.ndarray    # int64, n_lines + 1 offsets into the data
    cls: np.ndarray           # uint8 per line, see CLASS_NAMES
    line: np.ndarray          # int32 per token line: its index in the range
    kind: np.ndarray          # int16 per token line: index into Program.kinds
    event: np.ndarray         # int16 per token line: index into Program.events
    time_ms: np.ndarray       # float64 per token line, NaN when the line has no (valid) time
    fields: dict              # FIELDS -> (rows, values): the token lines that have it (int32, ascending), float64
    text: dict                # TEXT_COLUMNS -> (codes, values): int32 per token line (-1: none), and the
                              # distinct values (bytes, never empty) by code, in order of first appearance

    def field(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A field as a float64 column over the token lines (or over ``rows`` of them), NaN where absent."""
        have, values = self.fields[name]
        if rows is None:
            out = np.full(len(self.line), np.nan)
            out[have] = values
            return out
        if not len(have):
            return np.full(len(rows), np.nan)
        pos = np.minimum(np.searchsorted(have, rows), len(have) - 1)
        return np.where(have[pos] == rows, values[pos], np.nan)

    def texts(self, name: str) -> list:
        """A text column as one value per token line (b'' where it has none)."""
        codes, values = self.text[name]
        return [values[c] if c >= 0 else b"" for c in codes.tolist()]


class Buffers:
    """The C scan's output buffers, kept for the next range (grown when one needs more).

    A ``Scan`` made with them is a view of them: valid until they scan again. Reusing them
    means the scan touches no fresh memory per range (a fresh page costs a fault and zeroing,
    about as much as scanning it). One ``Buffers`` serves one scan at a time.
    """

    def __init__(self):
        self.lines = self.bytes = -1

    def sized(self, lines: int, nbytes: int) -> "Buffers":
        nf, nt = len(FIELDS), len(TEXT_COLUMNS)
        if lines > self.lines:
            n = self.lines = lines + lines // 4
            self.cls = np.empty(n, np.uint8)
            self.lstart = np.empty(n + 1, np.int64)
            self.tline = np.empty(n, np.int32)
            self.tkind = np.empty(n, np.int16)
            self.tevent = np.empty(n, np.int16)
            self.tts = np.empty(n, np.float64)
            self.fcount = np.empty(nf, np.int64)
            self.frows = np.empty(nf * n, np.int32)
            self.fvals = np.empty(nf * n, np.float64)
            self.tcodes = np.empty(nt * n, np.int32)
            self.doffs = np.empty(nt * (n + 1), np.int64)
            self.dcount = np.empty(nt, np.int64)
        if nbytes > self.bytes:
            self.bytes = nbytes + nbytes // 4
            self.ddata = np.empty(max(1, nt * self.bytes), np.uint8)
        return self


def scan(data, start: int, end: int, program: Program, native: bool | None = None,
         buffers: Buffers | None = None) -> Scan:
    """Scan ``data[start:end]`` (any bytes-like): whole lines (the last may lack its newline).
    With ``buffers``, the native scan writes into them and the ``Scan`` is a view of them."""
    if native is None:
        native = NATIVE
    if not native:
        return scan_reference(data, start, end, program)
    return _scan_native(data, start, end, program, buffers or Buffers())


def _scan_native(data, start, end, program, b: Buffers) -> Scan:
    nl = _linescan.count_lines(data, start, end)
    b.sized(nl, end - start)
    n, cap = b.lines, end - start    # the C code lays its columns out by the buffers' line count
    lines, ntok = _linescan.scan(data, start, end, program.code, len(FIELDS), b.cls, b.lstart, b.tline, b.tkind,
                                 b.tevent, b.tts, b.fcount, b.frows, b.fvals, b.tcodes, b.doffs, b.ddata, b.dcount)
    fields = {}
    for f, name in enumerate(FIELDS):
        k = int(b.fcount[f])
        fields[name] = (b.frows[f * n:f * n + k], b.fvals[f * n:f * n + k])
    text = {}
    for c, name in enumerate(TEXT_COLUMNS):
        offs = b.doffs[c * (n + 1):c * (n + 1) + int(b.dcount[c]) + 1].tolist()
        data_c = b.ddata[c * cap:(c + 1) * cap]
        text[name] = (b.tcodes[c * n:c * n + ntok], [data_c[x:y].tobytes() for x, y in zip(offs, offs[1:])])
    return Scan(b.lstart[:lines + 1], b.cls[:lines], b.tline[:ntok], b.tkind[:ntok], b.tevent[:ntok], b.tts[:ntok],
                fields, text)


# ---- the reference: Python's re, line by line -------------------------------------------

_TS = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
_LEVELS = rb"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)"
_CELERY = re.compile(rb"\[(?P<ts>" + _TS + rb"): [A-Z]+/(?P<process>[A-Za-z0-9_.\-]+)\] ")
_BASIC_TS = re.compile(rb"(?P<ts>" + _TS + rb") - ")
_BASIC = re.compile(rb"(?:(?P<logger>[A-Za-z0-9_.]+) - )?" + _LEVELS + rb" - ")
_DEFAULT = re.compile(_LEVELS + rb":(?P<logger>[A-Za-z0-9_.]+):")
_TASK_LOGGER = re.compile(rb"(?P<task>[A-Za-z0-9_.]+)\[[A-Za-z0-9_\-]+\]: ")
_CONTINUATION = re.compile(rb"(?:[ \t]+[^\t\n\f\r ]|Traceback \(most recent call last\)|During handling of the above|"
                           rb"The above exception|[A-Za-z0-9_.]+(?:Error|Exception|Exit|Interrupt|Warning)\b)")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of the proleptic Gregorian y-m-d (a day past the month's end rolls over)."""
    y -= m <= 2
    era, yoe = y // 400, y % 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _time_ms(ts: bytes) -> float:
    y, mo, d = int(ts[0:4]), int(ts[5:7]), int(ts[8:10])
    h, mi, s, ms = int(ts[11:13]), int(ts[14:16]), int(ts[17:19]), int(ts[20:23])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 61):
        return float("nan")
    return float((_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000 + ms)


def scan_reference(data, start, end, program: Program) -> Scan:
    """What the C scanner computes, one line at a time with ``re`` (slow, plain)."""
    chunk = bytes(data[start:end])
    parts = chunk.split(b"\n")
    lines = [x + b"\n" for x in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    starts, cls = [start], []
    tok = {"line": [], "kind": [], "event": [], "time": [], "fields": [], **{c: [] for c in TEXT_COLUMNS}}
    for i, raw in enumerate(lines):
        starts.append(starts[-1] + len(raw))
        c, hit = _classify(raw, program)
        cls.append(c)
        if c == TOKEN:
            for k, v in hit.items():
                tok[k].append(v)
            tok["line"].append(i)
    n = len(tok["line"])
    values = np.asarray(tok["fields"], np.float64).reshape(n, len(FIELDS))
    fields = {}
    for f, name in enumerate(FIELDS):
        rows = np.flatnonzero(~np.isnan(values[:, f])).astype(np.int32)
        fields[name] = (rows, values[rows, f])
    text = {}
    for c in TEXT_COLUMNS:
        index = {}
        codes = [index.setdefault(v, len(index)) if v else -1 for v in tok[c]]
        text[c] = (np.asarray(codes, np.int32), list(index))
    return Scan(np.asarray(starts, np.int64), np.asarray(cls, np.uint8), np.asarray(tok["line"], np.int32),
                np.asarray(tok["kind"], np.int16), np.asarray(tok["event"], np.int16),
                np.asarray(tok["time"], np.float64), fields, text)


def _classify(raw: bytes, program: Program):
    content = raw[:-1] if raw.endswith(b"\n") else raw
    if not raw.strip(b"\t\n\f\r "):
        return BLANK, None
    if raw[:1] == b"{":
        return JSON, None
    process = logger = b""
    ts = float("nan")
    msg = None
    m = _CELERY.match(content)
    if m:
        ts, process, msg = _time_ms(m["ts"]), m["process"], content[m.end():]
    elif (m := _BASIC_TS.match(content)):
        ts = _time_ms(m["ts"])
        b = _BASIC.match(content, m.end())
        if b:
            logger, msg = b["logger"] or b"", content[b.end():].split(b"\r")[0]
    elif (m := _DEFAULT.match(content)):
        logger, msg = m["logger"], content[m.end():].split(b"\r")[0]
    else:
        return (CONTINUATION if _CONTINUATION.match(content) else BAD), None
    if not msg:
        return OTHER, None
    task_logger = b""
    if (t := _TASK_LOGGER.match(msg)):
        task_logger, msg = t["task"], msg[t.end():].split(b"\r")[0]
    for prefix, tmpl, rxs in program._rx:
        if not msg.startswith(prefix):
            continue
        for ev, rx, extra in rxs:
            if extra or not (g := rx.match(msg)):
                continue
            values = [float("nan")] * len(FIELDS)
            capture = b""
            for name, v in g.groupdict().items():
                if name in FIELDS:
                    values[FIELDS.index(name)] = float(v)
                else:
                    capture = v
            for _, xrx, xextra in rxs:
                if xextra and (x := xrx.match(msg)):
                    for name, v in x.groupdict().items():
                        values[FIELDS.index(name)] = float(v)
            return TOKEN, {"kind": program.kinds.index(tmpl.kind), "event": ev, "time": ts, "fields": values,
                           "process": process, "logger": logger, "task_logger": task_logger, "capture": capture}
        if tmpl.strict:
            return FAILED, None
    return OTHER, None
