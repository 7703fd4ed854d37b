"""The live runner against the real fake Keepa over loopback, into a real SQLite file."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
import yaml

from keepa_ops import simulate
from keepa_ops.live.fake_server import FakeKeepa
from keepa_ops.live.runner import run_live
from keepa_ops.keepa.wire import DealRef
from tests.conftest import ROOT

SECRET = "kx-secret-7c1e55d0a9"


def write(tmp_path, cfg, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("KEEPA_API_KEY", raising=False)


def db_state(db):
    con = sqlite3.connect(db)
    try:
        deals = {a: (src, w, lu) for a, src, w, lu in con.execute(
            "SELECT asin, source, writes, deal_last_update FROM deals")}
        wm = con.execute("SELECT last_update, asin FROM watermarks").fetchone()
        ck = con.execute('SELECT page, "offset" FROM checkpoints').fetchone()
    finally:
        con.close()
    return deals, (DealRef(*wm) if wm else None), ck


def assert_watermark_not_ahead(deals, wm, published):
    if wm is None:
        return
    behind = [a for a, lu in published if DealRef(float(lu), a) <= wm and a not in deals]
    assert behind == [], f"watermark {wm} is ahead of stored rows: {behind[:5]}"


SEED_PRIORITY = {
    "refill_per_minute": 5, "start_tokens": 300, "policy": "priority",
    "tasks": {
        "update_recent_deals": {"role": "upserter", "every": "10m", "batch_size": 10, "cost_per_item": 20,
                                "page_cost": 5, "threshold": 50, "priority": 1},
        "backfill_deals": {"role": "backfiller", "every": "continuous", "batch_size": 5, "cost_per_item": 20,
                           "page_cost": 5, "threshold": 80, "priority": 2},
    },
    "workload": {"pending_new_deals": 40, "new_deals_per_hour": 6, "backlog": 10000},
    "keepa": {"product_params": {"offers": 20, "buybox": 1, "stock": 1}},
}


def test_priority_run_upserts_every_published_deal_exactly_once(tmp_path):
    w = SEED_PRIORITY["workload"]
    fake = FakeKeepa(5, 300, speed=3600, deals_per_hour=w["new_deals_per_hour"],
                     pending=w["pending_new_deals"], backlog=w["backlog"])
    fake.serve()
    fake.publish_until = fake.now() + 8 * 3600
    try:
        r = run_live(write(tmp_path, SEED_PRIORITY), tmp_path / "d.sqlite", duration=10 * 3600, speed=3600,
                     events_path=tmp_path / "ev.jsonl", progress=None, fake=fake)
        published = fake.published_deals()
        rep = fake.report()
    finally:
        fake.shutdown()
    deals, wm, ck = db_state(tmp_path / "d.sqlite")
    live = {a: v for a, v in deals.items() if v[0] == "live"}
    assert len(published) == 40 + 48
    assert set(live) == {a for a, _ in published}
    assert {v[1] for v in deals.values()} == {1}                # every row written exactly once
    assert_watermark_not_ahead(deals, wm, published)
    assert r.tasks["backfill_deals"]["items"] > 0 and ck is not None
    assert rep["refused"] == 0                                   # never spent at a balance <= 0
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert {"run_start", "grant", "spend", "upsert", "run_finish"} <= {e["event"] for e in events}


CRASH_CFG = {
    "refill_per_minute": 300, "start_tokens": 300, "policy": "priority",
    "tasks": {
        "update_recent_deals": {"role": "upserter", "every": "60s", "batch_size": 20, "cost_per_item": 1,
                                "page_cost": 5},
        "backfill_deals": {"role": "backfiller", "every": "continuous", "batch_size": 25, "cost_per_item": 1,
                           "page_cost": 5},
    },
    "keepa": {"timeout": 2, "retries": 3},
}


def _runner(cfg, db, url, speed, duration=None):
    env = dict(os.environ, KEEPA_API_KEY=SECRET, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "keepa_ops.cli", "run", "--config", str(cfg), "--db", str(db),
            "--keepa-url", url, "--speed", str(speed), "--quiet"]
    if duration:
        args += ["--duration", duration]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_at_20_random_moments_loses_nothing_and_resumes(tmp_path):
    speed = 60
    fake = FakeKeepa(300, 300, speed=speed, deals_per_hour=1200, pending=150, backlog=4000, keys=[SECRET])
    fake.serve()
    cfg, db = write(tmp_path, CRASH_CFG), tmp_path / "d.sqlite"
    rng = random.Random(20260204)
    starts = 0
    try:
        for _ in range(20):
            p = _runner(cfg, db, fake.url, speed)
            starts += 1
            time.sleep(rng.uniform(0.6, 1.6))
            p.send_signal(signal.SIGKILL)
            p.wait()
            deals, wm, ck = db_state(db)
            assert {v[1] for v in deals.values()} <= {1}
            assert_watermark_not_ahead(deals, wm, fake.published_deals())
        fake.publish_until = fake.now()
        p = _runner(cfg, db, fake.url, speed, duration="4m")
        starts += 1
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        published = fake.published_deals()
        rep = fake.report()
    finally:
        fake.shutdown()
    deals, wm, ck = db_state(db)
    live = {a for a, v in deals.items() if v[0] == "live"}
    assert live == {a for a, _ in published}
    assert all(v[1] == 1 for v in deals.values()), "a deal was written twice"
    backfilled = {a for a, v in deals.items() if v[0] == "backfill"}
    backlog = [d["asin"] for page in range(27) for d in fake.backlog_page(page)]
    assert backfilled == set(backlog[:len(backfilled)]), "the backfill has a gap"
    assert len(backfilled) > 1000
    pages_done = len(backfilled) // 150 + 1
    fetched = sum(rep["backlog_pages"].values())
    assert fetched <= pages_done + starts, f"{fetched} backlog page fetches: restarts began again at page 0"
    assert rep["backlog_pages"].get("0", 0) <= 2


FAULT_CFG = dict(CRASH_CFG, keepa={"timeout": 0.3, "retries": 3, "backoff": 0.05})


def test_faults_are_survived_logged_once_and_lose_nothing(tmp_path):
    fake = FakeKeepa(300, 300, speed=60, deals_per_hour=1200, pending=150, backlog=600)
    fake.serve()
    for kind, n in (("429", 4), ("500", 3), ("garbage", 2), ("drop", 2), ("slow", 2)):
        fake.faults.append([kind, n, 0.6])
    fake.publish_until = fake.now() + 240
    try:
        r = run_live(write(tmp_path, FAULT_CFG), tmp_path / "d.sqlite", duration=360, speed=60,
                     events_path=tmp_path / "ev.jsonl", progress=None, fake=fake)
        published = fake.published_deals()
        rep = fake.report()
    finally:
        fake.shutdown()
    assert rep["injected"] == {"429": 4, "500": 3, "garbage": 2, "drop": 2, "slow": 2}
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events if e["event"] == "fault"]
    assert sorted(kinds) == sorted(["http_5xx"] * 3 + ["garbage"] * 2 + ["connection"] * 2 + ["timeout"] * 2)
    assert sum(1 for e in events if e["event"] == "429") == 3  # the 4th 429 answered the start-up /token
    assert rep["refused"] == 0
    deals, wm, _ = db_state(tmp_path / "d.sqlite")
    assert {a for a, v in deals.items() if v[0] == "live"} == {a for a, _ in published}
    assert all(v[1] == 1 for v in deals.values())
    assert r.tasks["backfill_deals"]["items"] == 600


def test_the_key_appears_nowhere(tmp_path):
    fake = FakeKeepa(300, 300, speed=60, pending=50, backlog=300, keys=[SECRET])
    fake.serve()
    cfg = write(tmp_path, dict(CRASH_CFG, keepa={"timeout": 0.3, "retries": 1, "backoff": 0.01}))
    outputs = []
    try:
        p = _runner(cfg, tmp_path / "d.sqlite", fake.url, 60, duration="3m")
        time.sleep(1.0)
        requests.post(fake.url + "/__fake__/faults", json={"kind": "500", "count": 2})  # a run gives up
        outputs += list(p.communicate(timeout=60))
        assert p.returncode == 0
        # nothing listens (at 1x: a sped-up clock is refused, in one line, against what is not a fake at that speed)
        p = _runner(cfg, tmp_path / "d2.sqlite", "http://127.0.0.1:9", 1, duration="1m")
        outputs += list(p.communicate(timeout=60))
        assert p.returncode == 2 and "KeepaUnavailable" not in outputs[-1] and "gave up" in outputs[-1]
    finally:
        fake.shutdown()
    events = (tmp_path / "d.sqlite.events.jsonl").read_text()
    assert '"outcome":"fault"' in events and "http_5xx" in events
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f"key leaked into {f.name}"
    for text in outputs:
        assert SECRET not in text


AGREE_CFG = {
    "refill_per_minute": 60, "start_tokens": 0, "policy": "threshold",
    "tasks": {
        "update_recent_deals": {"role": "upserter", "every": "5m", "batch_size": 20, "cost_per_item": 1,
                                "page_cost": 5, "threshold": 30},
        "backfill_deals": {"role": "backfiller", "every": "continuous", "batch_size": 30, "cost_per_item": 1,
                           "page_cost": 5, "threshold": 10},
    },
    "workload": {"pending_new_deals": 45, "new_deals_per_hour": 120, "backlog": 600},
}


def test_simulation_and_live_agree_on_the_order_of_grants(tmp_path):
    hours = 0.5
    sim = [row[2] for row in simulate(AGREE_CFG, hours=hours).events.of("grant")]
    run_live(write(tmp_path, AGREE_CFG), tmp_path / "d.sqlite", duration=hours * 3600, speed=120,
             events_path=tmp_path / "ev.jsonl", progress=None)
    live = [e["task"] for e in map(json.loads, (tmp_path / "ev.jsonl").read_text().splitlines())
            if e["event"] == "grant"]
    n = min(len(sim), len(live))
    assert n >= 30
    assert live[:n - 2] == sim[:n - 2]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly(tmp_path, sig, code):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("KEEPA_API_KEY", None)
    cfg = write(tmp_path, dict(CRASH_CFG, workload={"pending_new_deals": 100, "new_deals_per_hour": 600,
                                                    "backlog": 3000}))
    p = subprocess.Popen([sys.executable, "-m", "keepa_ops.cli", "run", "--config", str(cfg), "--db",
                          str(tmp_path / "d.sqlite"), "--speed", "60"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    t = time.monotonic()
    p.send_signal(sig)
    out, err = p.communicate(timeout=20)
    assert p.returncode == code, err  # Ctrl-C: 130, as shells expect; SIGTERM is a service's normal stop
    assert time.monotonic() - t < 5
    assert f"stopped by {sig.name}" in out and "embedded fake Keepa" in out
    deals, wm, ck = db_state(tmp_path / "d.sqlite")
    assert deals and all(v[1] == 1 for v in deals.values())
    con = sqlite3.connect(tmp_path / "d.sqlite")
    assert con.execute("SELECT COUNT(*) FROM runs WHERE finished IS NOT NULL").fetchone()[0] >= 1


def test_a_url_without_a_key_is_a_clear_error(tmp_path, capsys):
    from keepa_ops.cli import main

    cfg = write(tmp_path, CRASH_CFG)
    assert main(["run", "--config", str(cfg), "--db", str(tmp_path / "d.sqlite"),
                 "--keepa-url", "http://127.0.0.1:9", "--duration", "1m"]) == 2
    err = capsys.readouterr().err
    assert "KEEPA_API_KEY" in err and "Traceback" not in err
    missing = write(tmp_path, dict(CRASH_CFG, keepa={"key_file": str(tmp_path / "nokey")}), "k.yaml")
    assert main(["run", "--config", str(missing), "--db", str(tmp_path / "d.sqlite"), "--duration", "1m"]) == 2
    assert "key_file" in capsys.readouterr().err


def test_a_sweep_number_predicts_the_live_run(tmp_path):
    """#11's bar: data/live_priority.yaml (Keepa's real page cost and /product parameters), simulated
    and run live against the embedded fake for 6 Keepa-hours, agree within 5 % per task."""
    cfg = ROOT / "data" / "live_priority.yaml"
    hours = 6
    sim = simulate(cfg, hours=hours).summary()["tasks"]
    live = run_live(cfg, tmp_path / "d.sqlite", duration=hours * 3600, speed=720, progress=None).tasks
    for name, s in sim.items():
        assert s["items"] > 20 and s["tokens_spent"] > 400
        assert live[name]["items"] == pytest.approx(s["items"], rel=0.05), name
        assert live[name]["tokens_spent"] == pytest.approx(s["tokens_spent"], rel=0.05), name


def test_a_key_in_the_environment_alone_never_reaches_real_keepa_from_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPA_API_KEY", SECRET)
    r = run_live(write(tmp_path, CRASH_CFG), tmp_path / "d.sqlite", duration=120, speed=120, fake_unless_url=True,
                 install_signals=False)
    assert r.embedded and r.keepa_url.startswith("http://127.0.0.1:")


def test_a_sped_up_clock_is_refused_against_a_server_that_is_not_a_fake_at_that_speed(tmp_path, monkeypatch, capsys):
    from keepa_ops.cli import main

    monkeypatch.setenv("KEEPA_API_KEY", SECRET)
    cfg = write(tmp_path, CRASH_CFG)
    slow = FakeKeepa(5, speed=1.0)
    fast = FakeKeepa(5, speed=120.0)
    try:
        args = ["run", "--config", str(cfg), "--db", str(tmp_path / "d.sqlite"), "--duration", "2m"]
        assert main(args + ["--keepa-url", slow.serve(), "--speed", "120"]) == 2
        err = capsys.readouterr().err
        assert "--speed 120" in err and "runs at 1x" in err and "Traceback" not in err and SECRET not in err
        assert main(args + ["--keepa-url", "http://127.0.0.1:9", "--speed", "120"]) == 2  # nothing there at all
        assert "not a fake Keepa" in capsys.readouterr().err
        assert main(args + ["--keepa-url", fast.serve(), "--speed", "120"]) == 0
    finally:
        slow.shutdown()
        fast.shutdown()
