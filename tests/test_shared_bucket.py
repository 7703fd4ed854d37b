"""One Keepa key, many real processes: `keepa-ops run --bucket` against one fake Keepa over loopback.

Each runner is a real `python -m keepa_ops.cli run` process with its own deals store; the
shared bucket is a real SQLite file or a real Redis server; the fake Keepa meters the one
key they share. The control runs the same processes without the shared bucket.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from keepa_ops import load_config
from keepa_ops.live.fake_server import FakeKeepa
from tests.conftest import ROOT

SECRET = "kx-shared-3f9a1c"
SPEED = 60            # one real second is one Keepa minute
BOUND_S = 600         # the starvation bound, Keepa seconds
PROCESSES = 4

CFG = {
    "refill_per_minute": 60, "start_tokens": 60, "policy": "priority", "starvation_bound": "10m",
    "tasks": {
        "update_recent_deals": {"role": "upserter", "every": "1m", "batch_size": 5, "cost_per_item": 12,
                                "page_cost": 5, "priority": 1},
        "backfill_deals": {"role": "backfiller", "every": "continuous", "batch_size": 5, "cost_per_item": 12,
                           "page_cost": 5, "priority": 2},
    },
    "workload": {"pending_new_deals": 20, "new_deals_per_hour": 30, "backlog": 100000, "offers_per_product": 20},
    "keepa": {"product_params": {"offers": 20}, "timeout": 2, "retries": 1},
}

# A runner whose wall clock is off by SKEW seconds: time.time() and time.time_ns() are shifted
# before keepa-ops is imported. Monotonic time is relative and cannot be skewed meaningfully.
SKEWED = """
import sys, time
skew = float(sys.argv.pop(1))
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + skew
time.time_ns = lambda: _time_ns() + int(skew * 1e9)
from keepa_ops.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("KEEPA_API_KEY", raising=False)


@pytest.fixture
def config_file(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(CFG))
    return p


@pytest.fixture
def fake():
    f = FakeKeepa.from_config(load_config(CFG), SPEED, keys=[SECRET])
    f.serve()
    yield f
    f.shutdown()


def spawn(cfg, db, fake, bucket=None, duration="30m", skew=None, tasks=()):
    env = dict(os.environ, KEEPA_API_KEY=SECRET, PYTHONPATH=str(ROOT))
    cmd = ["run", "--config", str(cfg), "--db", str(db), "--keepa-url", fake.url, "--speed", str(SPEED),
           "--quiet", "--json"]
    if duration:
        cmd += ["--duration", duration]
    if bucket:
        cmd += ["--bucket", bucket]
    for t in tasks:
        cmd += ["--task", t]
    head = [sys.executable, "-c", SKEWED, str(skew)] if skew is not None else [sys.executable, "-m", "keepa_ops.cli"]
    return subprocess.Popen(head + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs, timeout=120):
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        assert p.returncode == 0, se[-2000:]
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def run_four(folder, cfg, bucket, skews=(None,) * PROCESSES):
    """Four runners of both tasks, each with its own deals store, on one key of a fresh fake Keepa."""
    fake = FakeKeepa.from_config(load_config(CFG), SPEED, keys=[SECRET])
    fake.serve()
    try:
        results = finish([spawn(cfg, folder / f"d{i}.sqlite", fake, bucket, skew=skews[i]) for i in range(PROCESSES)])
        return _claims(results, fake.report(), max(r["keepa_seconds"] for r in results))
    finally:
        fake.shutdown()


def _claims(results, report, seconds):
    available = CFG["start_tokens"] + CFG["refill_per_minute"] * seconds / 60
    return {
        "refused": report["refused"],
        "upserter_max_wait": max(r["tasks"]["update_recent_deals"]["max_wait_s"] for r in results),
        "charged_share": sum(report["charged"].values()) / available,
        "backfilled": sum(r["tasks"]["backfill_deals"]["items"] for r in results),
        "upserted": [r["tasks"]["update_recent_deals"]["items"] for r in results],
    }


def assert_shared_bucket_holds(claims):
    # Keepa refuses no call beyond one per process in flight
    assert claims["refused"] <= PROCESSES, claims
    # the Upserter never waits past the starvation bound
    assert claims["upserter_max_wait"] <= BOUND_S, claims
    # the Backfiller gets what the Upserters leave: the key's refill is spent, and some of it on history
    assert claims["charged_share"] >= 0.85, claims
    assert claims["backfilled"] > 0, claims


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_four_processes_share_one_bucket_and_the_control_shows_the_problem(kind, tmp_path, config_file, request):
    bucket = f"sqlite:///{tmp_path}/bucket.db" if kind == "sqlite" else request.getfixturevalue("redis_server").url
    shared = run_four(tmp_path, config_file, bucket)
    assert_shared_bucket_holds(shared)
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    control = run_four(control_dir, config_file, None)
    print(f"\nshared {kind}: {shared}\ncontrol: {control}")
    # each process believes it owns the bucket: they overdraw it, and Keepa refuses call after call
    assert control["refused"] > 5 * PROCESSES, control
    assert control["refused"] > 5 * max(1, shared["refused"]), (control, shared)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_skewed_client_clocks_change_nothing(kind, tmp_path, config_file, request):
    bucket = f"sqlite:///{tmp_path}/bucket.db" if kind == "sqlite" else request.getfixturevalue("redis_server").url
    claims = run_four(tmp_path, config_file, bucket, skews=(30.0, -30.0, 0.0, 30.0))
    print(f"\nskewed +-30 s: {claims}")
    assert_shared_bucket_holds(claims)


def gate_state(url, cfg_file):
    from keepa_ops import Gate
    g = Gate.from_url(url, load_config(cfg_file))
    try:
        return g.state()
    finally:
        g.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_kill_9_of_waiting_or_holding_processes_never_sticks_the_queue(kind, tmp_path, config_file, fake, request):
    bucket = f"sqlite:///{tmp_path}/bucket.db" if kind == "sqlite" else request.getfixturevalue("redis_server").url
    rng = random.Random(20261201)
    # a steady pair runs throughout; a third process is killed at 20 random moments and restarted
    steady = [spawn(config_file, tmp_path / f"s{i}.sqlite", fake, bucket, duration=None) for i in range(2)]
    victim_db = tmp_path / "victim.sqlite"
    try:
        for _ in range(20):
            p = spawn(config_file, victim_db, fake, bucket, duration=None)
            time.sleep(rng.uniform(0.3, 1.5))
            p.send_signal(signal.SIGKILL)
            p.wait()
        # after the last kill, a restart runs 8 Keepa-minutes on the same store: it must not wait for a
        # dead reservation, so its Upserter is admitted within the bound and the queue drains
        after = finish([spawn(config_file, victim_db, fake, bucket, duration="8m")])[0]
    finally:
        for p in steady:
            p.send_signal(signal.SIGTERM)
        steady_results = finish(steady)
    assert after["tasks"]["update_recent_deals"]["grants"] > 0
    assert after["tasks"]["update_recent_deals"]["max_wait_s"] <= BOUND_S
    for r in steady_results:
        assert r["tasks"]["update_recent_deals"]["max_wait_s"] <= BOUND_S, r
    # every lease a killed process held has expired, and no dead waiter is left
    time.sleep(4.0)  # the longest lease: 2 s timeout x 2 tries + 1 s slack
    left = gate_state(bucket, config_file)
    assert left["leases"] == 0 and left["waiters"] == 0, left
    con = sqlite3.connect(victim_db)
    try:
        assert con.execute("SELECT MAX(writes) FROM deals").fetchone()[0] == 1  # no deal stored twice
    finally:
        con.close()


def test_a_redis_restart_mid_run_recovers_within_a_refill_period(tmp_path, config_file, fake, redis_server):
    procs = [spawn(config_file, tmp_path / f"d{i}.sqlite", fake, redis_server.url, duration="20m") for i in range(2)]
    time.sleep(6.0)   # 6 Keepa-minutes in
    redis_server.restart(down_s=2.0)   # its state is gone (no persistence): the gate starts afresh
    results = finish(procs)
    # nothing lost from the deals stores: every published deal up to the end is stored once
    published = {a for a, _ in fake.published_deals()}
    for i, r in enumerate(results):
        con = sqlite3.connect(tmp_path / f"d{i}.sqlite")
        try:
            live = {a for (a,) in con.execute("SELECT asin FROM deals WHERE source = 'live'")}
            assert con.execute("SELECT MAX(writes) FROM deals").fetchone()[0] == 1
        finally:
            con.close()
        missing = published - live
        # deals published in the last Upserter period may not be fetched yet
        assert len(missing) <= 2, sorted(missing)[:5]
        # the runner saw the outage (it admitted nothing: fault events) and was granted again within one
        # refill period (60 Keepa-seconds) of its last failed try, plus one poll interval (2 real s)
        events = [json.loads(ln) for ln in open(r["events"])]
        faults = [e["t"] for e in events if e["event"] == "fault" and e["kind"] == "gate"]
        assert faults, "the outage was not seen"
        regrant = min(e["t"] for e in events if e["event"] == "grant" and e["t"] > faults[-1])
        assert regrant - faults[-1] <= 60 + 2 * SPEED, (faults[-1], regrant)


def test_a_second_runner_of_a_task_on_one_store_is_refused(tmp_path, config_file, fake):
    db = tmp_path / "d.sqlite"
    first = spawn(config_file, db, fake, duration="20m", tasks=["update_recent_deals"])
    time.sleep(1.5)
    try:
        second = spawn(config_file, db, fake, duration="1m", tasks=["update_recent_deals"])
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "already has a runner" in lines[0] and "Fix:" in lines[0], err
        # the other task on the same store is fine
        other = spawn(config_file, db, fake, duration="2m", tasks=["backfill_deals"])
        assert finish([other])[0]["tasks"].keys() == {"backfill_deals"}
    finally:
        first.send_signal(signal.SIGTERM)
        finish([first])


@pytest.mark.parametrize("args, words", [
    (["--bucket", "redis://127.0.0.1:{port}/0"], ["Redis is unreachable", "Fix:"]),
    (["--bucket", "mysql://x/y"], ["--bucket:", "Fix:"]),
    (["--task", "nope"], ["--task:", "'nope'", "Fix:"]),
])
def test_a_bad_bucket_or_task_is_one_line_and_touches_nothing(tmp_path, config_file, args, words):
    from tests.redis_server import free_port
    db = tmp_path / "d.sqlite"
    args = [a.format(port=free_port()) for a in args]
    p = subprocess.run([sys.executable, "-m", "keepa_ops.cli", "run", "--config", str(config_file), "--db", str(db),
                        "--duration", "1m", "--quiet", *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=60)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in p.stderr
    assert not db.exists()
