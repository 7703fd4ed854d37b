"""The shared gate's rules, on each real backend: this process, an SQLite file, a Redis server.

The expected grant orders come from ``core.policies`` (the in-process policies the engine has
always used, written apart from the gate's ledger), so "the same policies in every backend"
is checked against an implementation the ledger does not share.
"""
import asyncio
import time

import pytest

from keepa_ops import Gate, GateUnavailable
from keepa_ops.config import parse_config
from keepa_ops.core.policies import Request, admission_target, make_policy
from keepa_ops.keepa.bucket import TokenBucket
from keepa_ops.keepa.wire import Envelope
from tests.redis_server import free_port


def cfg(policy="priority", bound="1h", rate=1.0, start=100, timeout=10, retries=3):
    return parse_config({
        "refill_per_minute": rate, "start_tokens": start, "capacity": 300, "policy": policy,
        "starvation_bound": bound,
        "tasks": {"up": {"role": "upserter", "every": "1m", "batch_size": 1, "cost_per_item": 20,
                         "page_cost": 0, "threshold": 10, "priority": 1},
                  "bf": {"role": "backfiller", "every": "continuous", "batch_size": 1, "cost_per_item": 50,
                         "page_cost": 0, "threshold": 40, "priority": 2}},
        "keepa": {"timeout": timeout, "retries": retries},
    })


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend_url(request, tmp_path):
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bucket.db"
    return request.getfixturevalue("redis_server").url


SCRIPT = [("bf", 50), ("up", 20), ("bf", 50), ("up", 20)]


def in_process_order(config):
    """What the engine's own policy grants for SCRIPT, asked one microsecond apart (the refill of the
    test's few milliseconds is below a token: the rounded balances do not see it)."""
    pol = make_policy(config.policy, config.starvation_bound)
    bucket = TokenBucket(config.refill_per_minute, config.start_tokens, capacity=config.capacity)
    for seq, (task, cost) in enumerate(SCRIPT, 1):
        spec = config.tasks[task]
        pol.add(Request(task, cost, admission_target(config.policy, cost, spec.threshold), 1, seq * 1e-6, seq,
                        spec.priority, spec.weight), bucket)
    out = []
    while (r := pol.choose(1e-3, bucket)) is not None:
        pol.granted(r)
        bucket.spend(r.cost, 1e-3)
        out.append((r.task, r.cost, round(bucket.balance(1e-3))))
    return out


def gate_order(gate):
    wids = []
    for task, cost in SCRIPT:  # 2 ms apart: SQLite's clock has millisecond resolution, and a tie in
        wids.append((gate.enqueue(task, cost), task, cost))  # age is decided by priority, not by order
        time.sleep(0.002)
    out, progress = [], True
    while progress:
        progress = False
        for item in list(wids):
            kind, lease, bal = gate.poll(item[0])
            if kind == "granted":
                out.append((item[1], item[2], round(bal)))
                wids.remove(item)
                progress = True
                break
    return out


@pytest.mark.parametrize("policy, bound", [("priority", "1h"), ("priority", "1s"), ("threshold", "1h"),
                                           ("fair", "1h"), ("greedy", "1h")])
def test_every_backend_grants_what_the_engines_own_policy_grants(backend_url, policy, bound):
    config = cfg(policy, bound)
    want = in_process_order(config)
    assert want, "the script must grant something"
    got = gate_order(Gate.from_url(backend_url, config))
    assert got == want


def test_the_policies_differ_on_the_script():
    """The script tells the policies apart, so the test above could fail on a wrong one."""
    orders = {p: tuple(in_process_order(cfg(p, b))) for p, b in
              [("priority", "1h"), ("priority", "1s"), ("threshold", "1h"), ("fair", "1h"), ("greedy", "1h")]}
    assert len(set(orders.values())) >= 4, orders


def env(left, ts, consumed=0.0, rate=0.001):
    return Envelope(tokens_left=left, refill_in_ms=60000, refill_rate=rate, consumed=consumed, timestamp_ms=ts)


def test_the_newest_envelope_sets_the_balance_less_what_is_in_flight(backend_url):
    gate = Gate.from_url(backend_url, cfg("greedy", start=200))
    a = gate.acquire("up", 20)
    b = gate.acquire("bf", 30)
    assert gate.state()["leases"] == 2
    assert a.settle(env(50, ts=1_000, consumed=22)) == pytest.approx(50 - 30, abs=0.01)  # b still in flight
    # an older envelope only swaps b's estimate (30) for what Keepa charged (25)
    assert b.settle(env(999, ts=900, consumed=25)) == pytest.approx(20 + 30 - 25, abs=0.01)
    # a 429 is an envelope too: the newest, so authoritative
    assert gate.settle(None, env(-3, ts=2_000)) == pytest.approx(-3, abs=0.01)
    assert gate.state()["leases"] == 0


def test_a_lease_ends_at_its_deadline_and_its_debit_stays(backend_url):
    gate = Gate.from_url(backend_url, cfg("greedy", start=200, timeout=0.2, retries=0))
    gate.acquire("bf", 50)  # a holder that dies: never settled, never released
    before = gate.state()
    assert before["leases"] == 1 and before["bal"] == pytest.approx(150_000, abs=5)
    time.sleep(1.4)  # timeout 0.2 s x 1 try + 1 s slack
    after = gate.state()
    assert after["leases"] == 0
    assert after["bal"] == pytest.approx(150_000, abs=100)  # the refill of 1.4 s at 1 token/min, not the 50 back


def test_a_waiter_that_stops_polling_leaves_the_queue(backend_url):
    gate = Gate.from_url(backend_url, cfg("priority", start=0), waiter_ttl=0.5)
    dead = gate.enqueue("up", 20)  # the head, then silent: a process killed while waiting
    assert gate.poll(dead)[0] == "wait"
    time.sleep(0.7)
    assert gate.state()["waiters"] == 0
    assert gate.poll(dead)[0] == "gone"


def test_a_parked_waiter_keeps_its_place_past_the_ttl_and_comes_back_ahead(backend_url):
    """A Celery task that gives its pool process back (a retry) must not lose its turn: parked, it
    outlives the TTL; resumed with another cost, it is still ahead of a waiter that came after it."""
    gate = Gate.from_url(backend_url, cfg("priority", start=0), waiter_ttl=0.4)
    first = gate.enqueue("bf", 50)
    assert gate.park(first, 1.0)[0] == "parked"
    time.sleep(0.6)                       # past the TTL, within the parked time
    later = gate.enqueue("bf", 50)        # same task and priority, younger
    assert gate.state()["waiters"] == 2
    gate.settle(None, env(200, ts=1_000))
    assert gate.poll(later)[0] == "wait"  # the parked one is still the head
    kind, lease, _, wid = gate.ask("bf", 40, resume=first)
    assert (kind, wid) != ("wait", first) and kind == "granted"
    assert gate.state()["bal"] == pytest.approx(160_000, abs=20)  # charged the new cost, 40
    assert gate.poll(later)[0] == "granted"


def test_a_parked_waiter_that_never_comes_back_leaves_after_its_time_and_the_ttl(backend_url):
    gate = Gate.from_url(backend_url, cfg("priority", start=0), waiter_ttl=0.3)
    wid = gate.enqueue("up", 20)
    gate.park(wid, 0.3)
    time.sleep(0.8)
    assert gate.state()["waiters"] == 0
    assert gate.park(wid, 1.0)[0] == "gone"
    assert gate.ask("up", 20, resume=wid)[3] != wid  # resuming a gone waiter queues a new one


def test_a_resumed_waiter_keeps_its_age_so_its_promotion(backend_url):
    """Aging survives the retry: a low-priority waiter resumed after its promotion time outranks an
    urgent one that has just arrived, as it would have had it never left."""
    gate = Gate.from_url(backend_url, cfg("priority", bound="1s", start=0), waiter_ttl=2.0)
    old = gate.enqueue("bf", 50)          # bound 1 s: promoted at once (its fill time exceeds the bound)
    gate.park(old, 0.5)
    time.sleep(0.05)
    urgent = gate.enqueue("up", 20)
    gate.settle(None, env(100, ts=1_000))
    assert gate.poll(urgent)[0] == "wait"
    assert gate.ask("bf", 50, resume=old)[0] == "granted"


def test_acquire_past_its_timeout_says_when_to_come_back_and_can_hold_the_place(backend_url):
    gate = Gate.from_url(backend_url, cfg("priority", rate=60, start=0), waiter_ttl=0.3)
    with pytest.raises(TimeoutError) as gone:
        gate.acquire("up", 20, timeout=0.05)
    assert gone.value.waiter is None and gate.state()["waiters"] == 0
    with pytest.raises(TimeoutError) as held:
        gate.acquire("up", 20, timeout=0.05, hold_place=True)
    e = held.value
    # 20 tokens at 60/min: about 20 s from an empty bucket, less what refilled while it waited
    assert e.waiter is not None and 15 < e.retry_in <= 20.5 and e.task == "up" and e.cost == 20
    time.sleep(0.5)                       # past the TTL: the place is held until the prediction
    assert gate.state()["waiters"] == 1
    gate.settle(None, env(30, ts=1_000, rate=60))
    permit = gate.acquire("up", 20, resume=e.waiter, timeout=1.0)
    assert gate.state()["waiters"] == 0 and permit.cost == 20


def test_an_old_sqlite_bucket_comes_back_with_its_leases_expired(tmp_path):
    url = f"sqlite:///{tmp_path}/bucket.db"
    gate = Gate.from_url(url, cfg("greedy", start=200, timeout=0.1, retries=0))
    gate.acquire("bf", 50)
    gate.close()
    time.sleep(1.2)
    again = Gate.from_url(url, cfg("greedy", start=200, timeout=0.1, retries=0))
    assert again.state()["leases"] == 0


def test_acquire_async_waits_without_blocking_the_loop(backend_url):
    gate = Gate.from_url(backend_url, cfg("priority", rate=600, start=0), waiter_ttl=1.0)
    ticks = []

    async def ticker():
        for _ in range(20):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        t = asyncio.create_task(ticker())
        async with await gate.acquire_async("up", 2) as permit:  # 2 tokens at 10/s: about 0.2 s
            permit.settle(env(0, ts=int(time.time() * 1000), consumed=2, rate=600))
        await t
        return permit

    permit = asyncio.run(main())
    assert permit.waited_s >= 0.1
    assert len(ticks) == 20 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.1


def test_an_unreachable_redis_fails_closed_with_one_line():
    url = f"redis://127.0.0.1:{free_port()}/0"
    gate = Gate.from_url(url, cfg())
    with pytest.raises(GateUnavailable) as e:
        gate.acquire("up", 20, timeout=1)
    msg = str(e.value)
    assert "\n" not in msg and "unreachable" in msg and "Fix:" in msg


def test_the_fallback_is_a_local_bucket_at_a_share_of_the_refill(capsys):
    url = f"redis://127.0.0.1:{free_port()}/0?fallback=local&processes=4"
    config = cfg("greedy", rate=60, start=100)
    gate = Gate.from_url(url, config)
    with gate.acquire("up", 1, timeout=5) as p:  # admitted from the local bucket, after its first refill
        p.settle(env(10, ts=1, consumed=1, rate=60))
    assert gate.fell_back and "unreachable" in gate.fell_back
    assert gate.init["rate"] == 15_000 and gate.init["cap"] == 75_000  # 60/min and 300 over 4 processes
    assert "1/4 of the refill" in capsys.readouterr().err


def test_a_bad_bucket_url_names_the_flag_and_the_fix():
    from keepa_ops import ConfigError
    for url in ("mysql://x", "sqlite://", "redis://127.0.0.1:1/0?fallback=local"):
        with pytest.raises(ConfigError) as e:
            Gate.from_url(url, cfg())
        assert str(e.value).startswith("--bucket:") and "Fix:" in str(e.value)


def test_the_readme_example_runs_as_it_stands(tmp_path, monkeypatch):
    """The README's gate example, executed as written (in a scratch folder with the shipped data)."""
    import re
    import shutil
    from tests.conftest import ROOT
    text = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- gate-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    shutil.copytree(ROOT / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEPA_API_KEY", raising=False)
    out = {}
    exec(compile(code, "README.md", "exec"), out)
    assert out["permit"].settled and out["balance"] == out["envelope"].tokens_left
    assert (tmp_path / "runs" / "bucket.db").exists()


def test_a_stepped_bucket_refills_once_a_minute_where_refillin_says(backend_url):
    """refill: stepped. With scale 600 a Keepa minute is 0.1 s; the envelope puts the next step 30 Keepa-s out."""
    config = parse_config({**cfg("greedy", rate=5, start=0).raw, "refill": "stepped"})
    gate = Gate.from_url(backend_url, config, scale=600.0)
    e = Envelope(tokens_left=7, refill_in_ms=30_000 / 600, refill_rate=5, consumed=0, timestamp_ms=1)
    assert gate.settle(None, e) == 7
    time.sleep(0.02)                   # 12 Keepa-seconds: before the step
    assert gate.state()["bal"] == 7000
    time.sleep(0.2)                    # past the steps at +30 s and +90 s, before the one at +150 s
    assert gate.state()["bal"] == 7000 + 2 * 5000


def test_a_restored_redis_comes_back_with_its_leases_expired(tmp_path):
    from tests.redis_server import RedisServer
    server = RedisServer(tmp_path, persist=True)
    try:
        config = cfg("greedy", start=200, timeout=0.1, retries=0)
        gate = Gate.from_url(server.url, config)
        gate.acquire("bf", 50)  # held by a process that then dies with the server
        assert gate.state()["leases"] == 1
        server.stop()   # killed: what the append-only file holds is what comes back
        time.sleep(1.3)
        server.start()
        again = Gate.from_url(server.url, config)
        left = again.state()
        assert left["leases"] == 0
        assert left["bal"] == pytest.approx(150_000, abs=100)  # the state came back (not a fresh bucket)
    finally:
        server.stop()
