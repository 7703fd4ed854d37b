"""Log sources: files, directories, rotated sets and gzip, as raw bytes.

Invariants: a rotated set (``x.log.3``, ``x.log.2.gz``, ``x.log.1``, ``x.log``) is one
stream read oldest first; a truncated gzip yields what it could decompress and is
marked ``truncated``; nothing here decodes text, so no encoding can make it fail; a
file is read only when asked for, so a set is never in memory all at once.
"""
from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import LogParseError

# x.log.3, x.log.2.gz (RotatingFileHandler) and x.log.2026-03-11, x.log.2026-03-11_04 (TimedRotatingFileHandler)
_ROTATION = re.compile(r"^(?P<base>.+?)(?:\.(?P<n>\d+)|\.(?P<date>\d{4}-\d{2}-\d{2}(?:[_T]\d{2}(?:-\d{2}){0,2})?))?"
                       r"(?:\.gz)?$")


BLOCK_SIZE = 64 << 20  # inflated bytes of a gzip parsed at a time


@dataclass
class Source:
    stream: str      # the rotated set it belongs to (base name)
    path: Path

    def blocks(self, block_size: int = BLOCK_SIZE):
        """The file as ``(bytes, truncated)`` blocks of whole lines, about ``block_size`` each.

        A plain file is read a block at a time into one reused buffer (a block is a ``memoryview``,
        valid until the next is asked for), and a gzip is inflated as a stream, so memory follows
        the block size, not the file's (a 2 MB gzip may inflate to gigabytes); a UTF-16 file, rare
        and not splittable on bytes, is one block. ``truncated`` is set on the last block of a gzip
        that ended early or is corrupt. Blocks are bytes-like: read them with the buffer protocol.
        """
        try:
            with open(self.path, "rb") as f:
                head = f.read(2)
                f.seek(0)
                if head in (b"\xff\xfe", b"\xfe\xff"):
                    yield _utf8(f.read()), False
                    return
                if head != b"\x1f\x8b":
                    yield from _plain_blocks(f, block_size)
                    return
                if _inflated_head(f) in (b"\xff\xfe", b"\xfe\xff"):   # a UTF-16 gzip: one block, as a file
                    pieces, truncated = [], False
                    for block, truncated in _inflate(f, block_size):
                        pieces.append(bytes(block))
                    yield _utf8(b"".join(pieces)), truncated
                    return
                yield from _inflate(f, block_size)
        except OSError as e:
            raise LogParseError(f"{self.path}: cannot be read ({e.strerror})") from None



def _first_block(buf: bytearray, end: int) -> tuple[int, bool]:
    """What the first block of a file decides, in ``buf[:end]``, in place: a UTF-8 BOM goes, and
    whether the file's lines end in CR alone (old Mac), as ``_utf8`` decides both for a whole file.
    Returns the block's new end and that decision."""
    if buf[:3] == b"\xef\xbb\xbf":
        buf[:end - 3] = buf[3:end]
        end -= 3
    return end, buf.find(b"\n", 0, end) < 0 and buf.find(b"\r", 0, end) >= 0


def _cut(buf: bytearray, end: int, cr_only: bool) -> int:
    """Where ``buf[:end]`` ends its last whole line (CR-only line ends made LF first, in place), or 0."""
    if cr_only:
        buf[:end] = buf[:end].replace(b"\r", b"\n")
    return buf.rfind(b"\n", 0, end) + 1


def _inflated_head(f, n: int = 2) -> bytes:
    """The first ``n`` bytes a gzip file inflates to (fewer if it cannot); the file is rewound."""
    try:
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(f.read(1 << 16), n)
    except zlib.error:
        head = b""
    f.seek(0)
    return head


def _inflate(f, block_size: int):
    """A gzip file (one member or several) -> blocks of whole lines; the last may end mid-line,
    as may a block whose one line is longer than the block. The first block decides what
    ``_utf8`` decides for a whole file (UTF-16 aside: ``Source.blocks`` takes such a file whole).

    Each block is a ``memoryview`` of one buffer, filled in place and never resized (no fresh
    memory per block), valid until the next is asked for. The last block says whether the stream
    was truncated or corrupt: what came before is kept.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False  # the current decompressor has been fed part of a member
    buf = bytearray(block_size)
    have = 0         # the bytes of buf in use (a partial line carried over first)
    broken = False
    first, cr_only = True, False
    while not broken:
        raw = f.read(1 << 20)
        if not raw:
            break
        while raw:
            started = True
            try:   # never more than fits (a full buffer is cut below, mid-line if it has no line end)
                out = d.decompress(raw, max(1, min(len(buf) - have, 8 << 20)))
            except zlib.error:
                broken = True
                break
            buf[have:have + len(out)] = out
            have += len(out)
            raw = d.unconsumed_tail
            if d.eof:  # the next member of a multi-member gzip, if any (the tail is then the same bytes)
                raw = d.unused_data
                d, started = zlib.decompressobj(16 + zlib.MAX_WBITS), False
            if have >= block_size:
                if first:
                    first = False
                    have, cr_only = _first_block(buf, have)
                cut = _cut(buf, have, cr_only) or have
                with memoryview(buf) as view, view[:cut] as block:
                    yield block, False
                buf[:have - cut] = buf[cut:have]
                have -= cut
    if first:
        have, cr_only = _first_block(buf, have)
    _cut(buf, have, cr_only)
    with memoryview(buf) as view, view[:have] as block:
        yield block, broken or (started and not d.eof)


def _plain_blocks(f, block_size: int):
    """A plain file -> blocks of whole lines of about ``block_size`` (the last may end mid-line).
    The first block decides what ``_utf8`` decides for a whole file.

    The file is read into one buffer, reused: each block is a ``memoryview`` of it, valid until
    the next block is asked for (no block is copied, and no fresh memory is touched per block).
    A line longer than the buffer grows it.
    """
    buf = bytearray(block_size)
    have, first, cr_only = 0, True, False      # have: the bytes carried over (a partial line) at the front
    while True:
        n = f.readinto(memoryview(buf)[have:])
        if not n:
            break
        end = have + n
        if first:
            first = False
            end, cr_only = _first_block(buf, end)
        cut = _cut(buf, end, cr_only)
        if cut == 0:             # no line end yet: read on, with room to
            have = end
            if have == len(buf):
                buf.extend(bytes(len(buf)))
            continue
        with memoryview(buf) as view, view[:cut] as block:
            yield block, False
        have = end - cut
        buf[:have] = buf[cut:end]
    if have:
        yield memoryview(buf)[:have], False


def _utf8(data: bytes) -> bytes:
    """UTF-16 logs (with a BOM) become UTF-8, a UTF-8 BOM goes, and a file whose lines end in CR
    alone gets LF line ends; everything else is left as bytes."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        data = data.decode("utf-16", "replace").encode("utf-8")
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    if b"\n" not in data and b"\r" in data:   # old-Mac line ends: one line per CR, not one line in all
        data = data.replace(b"\r", b"\n")
    return data


def _special(path: Path) -> str:
    return f"{path}: not a regular file (a pipe or a device), skipped"


def _walk(root: Path, notes: list) -> list[Path]:
    """The regular files under ``root``; an unreadable folder or a special file is noted, not read."""
    found = []

    def unreadable(err):
        notes.append(f"{err.filename}: folder not readable ({err.strerror}), skipped")

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            f = Path(folder) / name
            if f.is_file():
                found.append(f)
            elif f.exists():
                notes.append(_special(f))
    return found


def expand(paths, notes: list | None = None) -> list[Path]:
    """Files named or found under the folders named. A FIFO, socket or device is never opened
    (reading one can block forever): it is skipped, and so is an unreadable folder, each with
    a line in ``notes``."""
    notes = [] if notes is None else notes
    out = []
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        p = Path(p)
        if p.is_dir():
            out.extend(_walk(p, notes))
        elif p.is_file():
            out.append(p)
        elif p.exists():
            notes.append(_special(p))
        else:
            raise LogParseError(f"{p}: no such file or directory")
    return out


def list_sources(paths, notes: list | None = None) -> list[Source]:
    """Every file under ``paths`` once (a file named twice, or given beside its directory, is
    read once), rotated sets grouped and ordered oldest first by name (not yet read; the
    parser reorders a set by the time in its content)."""
    seen, files = set(), []
    for f in expand(paths, notes):
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            files.append(f)
    groups: dict[str, list[tuple[tuple, Path]]] = {}
    for f in files:
        m = _ROTATION.match(f.name)
        if m.group("n"):
            order = (0, -int(m.group("n")), "")     # .3 is older than .1
        elif m.group("date"):
            order = (0, 0, m.group("date"))          # older dates first
        else:
            order = (1, 0, "")                       # the live file last
        groups.setdefault(str(f.parent / m.group("base")), []).append((order, f))
    # a stream is named by its base name, or by its folder too where two folders (two hosts) share it
    names = [Path(g).name for g in groups]
    sources = []
    for (stream, members), name in zip(groups.items(), names):
        label = name if names.count(name) == 1 else str(Path(Path(stream).parent.name) / name)
        for _, f in sorted(members, key=lambda x: x[0]):
            sources.append(Source(label, f))
    return sources
