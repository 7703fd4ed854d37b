"""Issue #16 goals: on a 0.9 GB dense worker log, `keepa-ops parse --out x.parquet` runs at
>= 250 MB/s as a whole process with peak memory <= 1x the file, and `keepa-ops diagnose`
takes <= 8 s.

The log is what a busy legacy worker writes: 94 % token lines (waits, heartbeats, Keepa calls,
syncs) with the detail-bearing lines among them (backfill checkpoints, watermarks, worker
lost), task boundaries, and a little noise. It is written here, streamed to disk.

Each figure is a whole CLI process (interpreter start and imports included), timed from the
outside, best of --runs; its peak memory is the process's own maximum RSS (os.wait4), read by a
small runner process started first (a child's maximum RSS starts from that of the process it was
forked from). The baseline, same run, same file: `grep -c Insufficient` (one pass that reads it all).

    python benchmarks/bench_parse_dense.py            # 0.9 GB
    python benchmarks/bench_parse_dense.py --mb 200   # quicker

It also parses the same lines as a rotated set with two gzipped files, whose peak should stay
within the single file's.
"""
import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCS = ("ForkPoolWorker-1", "ForkPoolWorker-2", "ForkPoolWorker-3", "ForkPoolWorker-4")
UP, BF = "keepa_deals.simple_task.update_recent_deals", "keepa_deals.backfiller.backfill_deals"


def generate(path: Path, mb: float) -> tuple[int, int]:
    """Write about ``mb`` MB of dense worker log; returns (bytes, lines)."""
    rng = random.Random(16)
    t = 1770163200.0  # 2026-02-04 00:00 UTC
    size = lines = 0
    page = chunk = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            out = []
            for _ in range(20_000):
                t += rng.random() * 0.02
                lt = time.gmtime(t)
                ts = "%04d-%02d-%02d %02d:%02d:%02d,%03d" % (lt[0], lt[1], lt[2], lt[3], lt[4], lt[5],
                                                            int((t % 1) * 1000))
                p = PROCS[rng.randrange(4)]
                r = rng.random()
                bal = rng.uniform(-50, 300)
                if r < 0.30:
                    line = "[%s: WARNING/%s] Insufficient tokens (Current: %.2f, Target: %d). Waiting for %ds." % (
                        ts, p, bal, rng.choice((150, 180, 250)), rng.randint(10, 3000))
                elif r < 0.52:
                    line = "[%s: INFO/%s] [Heartbeat] Waiting for tokens... Current: %.2f. Target: 250. Remaining: %ds" % (
                        ts, p, bal, rng.randint(1, 2700))
                elif r < 0.68:
                    line = "[%s: INFO/%s] Batch API call successful. Tokens consumed: %d. Tokens left: %d" % (
                        ts, p, rng.choice((100, 200)), bal)
                elif r < 0.74:
                    line = "[%s: INFO/%s] Fetched 150 deals. Tokens consumed: 5. Tokens left: %d" % (ts, p, bal)
                elif r < 0.80:
                    line = ("[%s: INFO/%s] Token count authoritatively synced from API response. Previous estimate: "
                            "%.2f, New value: %.2f" % (ts, p, bal, bal + 3))
                elif r < 0.85:   # detail-bearing: a backfill checkpoint
                    chunk += 1
                    if chunk == 30:
                        page, chunk = page + 1, 0
                    line = "[%s: INFO/%s] --- Backfill state saved. Page: %d, Chunk: %d ---" % (ts, p, page, chunk)
                elif r < 0.88:   # detail-bearing: a watermark
                    line = "[%s: INFO/%s] Successfully updated watermark to 2026-02-%02dT%02d:%02d:00Z" % (
                        ts, p, lt[2], lt[3], lt[4])
                elif r < 0.90:
                    line = "[%s: INFO/MainProcess] Task %s[%016x] received" % (ts, rng.choice((UP, BF)),
                                                                           rng.getrandbits(64))
                elif r < 0.92:
                    line = "[%s: INFO/%s] Task %s[%016x] succeeded in %.2fs: None" % (
                        ts, p, rng.choice((UP, BF)), rng.getrandbits(64), rng.random() * 9)
                elif r < 0.935:
                    line = "[%s: INFO/%s] --- Task: update_recent_deals started (Version: 2.1) ---" % (ts, p)
                elif r < 0.94:   # detail-bearing: a worker lost
                    line = ("[%s: ERROR/MainProcess] Task handler raised error: WorkerLostError('Worker exited "
                            "prematurely: signal 9 (SIGKILL) Job: %d.')" % (ts, rng.randint(1, 9999)))
                else:
                    line = ("[%s: INFO/%s] HTTP Request: GET https://api.keepa.com/product?domain=1&asin=B0%08X "
                            "\"HTTP/1.1 200 OK\"" % (ts, p, rng.getrandbits(32)))
                out.append(line)
            block = "\n".join(out) + "\n"
            f.write(block)
            size += len(block)
            lines += len(out)
    return size, lines


def rotate(log: Path, folder: Path) -> Path:
    """The log as RotatingFileHandler leaves it: thirds, the two older ones gzipped; returns the folder."""
    import gzip
    import shutil

    folder.mkdir()
    data = log.read_bytes()
    cuts = [0, data.index(b"\n", len(data) // 3) + 1, data.index(b"\n", 2 * len(data) // 3) + 1, len(data)]
    for name, a, b in (("celery_worker.log.2.gz", 0, 1), ("celery_worker.log.1.gz", 1, 2)):
        with gzip.open(folder / name, "wb", compresslevel=1) as f:
            f.write(data[cuts[a]:cuts[b]])
    (folder / "celery_worker.log").write_bytes(data[cuts[2]:])
    del data
    shutil.copystat(log, folder)
    return folder


# Every command is run by this small process, started before the benchmark itself grows: on Linux a
# child's peak RSS (ru_maxrss) starts from the memory of the process it was forked from (Python forks
# with vfork, which shares the whole address space, peak included), so a command started by a parent
# that once held the 0.9 GB log would report that parent's peak, not its own.
RUNNER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    cmd = json.loads(line)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read()
    p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    print(json.dumps([time.perf_counter() - t, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), out]),
          flush=True)
"""


class Runner:
    """Runs commands in a process of its own, small and started first (see RUNNER)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def measure(self, cmd: list[str]) -> tuple[float, int, str]:
        """(wall seconds, peak RSS bytes, stdout) of one whole process."""
        import json

        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        dt, rss, code, out = json.loads(self.proc.stdout.readline())
        if code != 0:   # a crash is no measurement (a traceback exits 1)
            raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}")
        return dt, rss, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=900.0, help="log size in MB (default 900)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each command; the best counts (default 3)")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "keepa_ops.cli"]
    measure = Runner().measure   # first, while this process is small
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "celery_worker.log"
        size, lines = generate(log, args.mb)
        out = Path(d) / "events.parquet"
        grep = min(measure(["grep", "-c", "Insufficient", str(log)])[0] for _ in range(args.runs))
        parse = min((measure(cli + ["parse", str(log), "--out", str(out)]) for _ in range(args.runs)),
                    key=lambda r: r[0])
        import pyarrow.parquet as pq
        events = pq.read_metadata(out).num_rows
        diag = min((measure(cli + ["diagnose", "--no-check", str(log)]) for _ in range(args.runs)),
                   key=lambda r: r[0])
        if "verdict:" not in diag[2]:
            raise SystemExit("diagnose printed no verdict")
        rotated = rotate(log, Path(d) / "rotated")
        log.unlink()
        rot = min((measure(cli + ["parse", str(rotated), "--out", str(out)]) for _ in range(args.runs)),
                  key=lambda r: r[0])
    mbs = size / 1e6 / parse[0]
    print(f"{lines:,} lines, {size / 1e6:.0f} MB, {events:,} events; grep -c {grep:.2f} s "
          f"({size / 1e6 / grep:.0f} MB/s)")
    print(f"parse --out: {parse[0]:.2f} s = {mbs:.0f} MB/s, {events / parse[0] / 1e6:.2f} M events/s, "
          f"{parse[0] / grep:.1f}x grep; peak {parse[1] / 1e9:.2f} GB = {parse[1] / size:.2f}x the file "
          f"(goals: >= 250 MB/s {'met' if mbs >= 250 else 'MISSED'}, <= 1x memory "
          f"{'met' if parse[1] <= size else 'MISSED'})")
    print(f"parse --out of the same lines as a rotated set (x.log.2.gz, x.log.1.gz, x.log): {rot[0]:.2f} s, "
          f"peak {rot[1] / 1e9:.2f} GB = {rot[1] / size:.2f}x the uncompressed size "
          f"(goal: within the single file's memory {'met' if rot[1] <= max(parse[1], size) else 'MISSED'})")
    print(f"diagnose: {diag[0]:.2f} s, peak {diag[1] / 1e9:.2f} GB = {diag[1] / size:.2f}x the file "
          f"(goal: <= 8 s {'met' if diag[0] <= 8 else 'MISSED'})")


if __name__ == "__main__":
    main()
