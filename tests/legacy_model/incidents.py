"""Incident shapes of incidents.md, run in the model, written as the legacy worker logs them.

Each ``make_*`` runs a ``World``, asserts its ground truth where it is generated (the
mechanism must really have happened in the model), writes the log files and returns an
``Incident`` with the answer an operator should get. Numbers are chosen per incident, in
several formats, so a diagnosis must work from the mechanism, not from one file.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import pipeline as P
from .world import World

HOUR = 3600.0


@dataclass
class Incident:
    name: str
    paths: list
    verdict: list
    starved: list = field(default_factory=list)
    culprit: str | None = None
    stalled: list = field(default_factory=list)
    refill: float | None = None
    targets: dict = field(default_factory=dict)
    truth: object = None
    raw_lines: set = field(default_factory=set)     # lines the model wrote with no logging prefix


def write(world: World, directory: Path, name: str, split: tuple = (), gz: bool = True) -> list[Path]:
    """The log, in time order, cut into a rotated set at the ``split`` fractions (oldest first)."""
    lines = [text for _, _, text in sorted(world.lines, key=lambda x: (x[0], x[1]))]
    directory.mkdir(parents=True, exist_ok=True)
    cuts = [0] + [int(len(lines) * f) for f in split] + [len(lines)]
    parts = [lines[a:b] for a, b in zip(cuts, cuts[1:])]
    paths = []
    for k, part in enumerate(parts):
        age = len(parts) - 1 - k
        body = ("\n".join(part) + "\n").encode()
        if age == 0:
            p = directory / name
            p.write_bytes(body)
        elif gz:
            p = directory / f"{name}.{age}.gz"
            p.write_bytes(gzip.compress(body, mtime=0))
        else:
            p = directory / f"{name}.{age}"
            p.write_bytes(body)
        paths.append(p)
    return paths


def beat(w: World, task, body, every: float, hours: float, first: float = 0.0, **kw):
    t = first
    while t < hours * HOUR:
        w.at(t + w.rng.uniform(0.0, 0.07), lambda w, kw=kw: w.send(task, body, **kw))
        t += every


def arrivals(w: World, per_hour: float, hours: float, pending: int = 0):
    w.redis["pending"] = pending
    if per_hour <= 0:
        return
    t = 0.0
    while True:
        t += w.rng.expovariate(per_hour / HOUR)
        if t >= hours * HOUR:
            break
        w.at(t, lambda w: w.redis.__setitem__("pending", w.redis.get("pending", 0) + 1))


def noise(w: World, hours: float):
    beat(w, "clean_stale_deals", P.janitor, 4 * HOUR, hours, first=0.3 * HOUR)
    w.at(hours * HOUR * 0.37, lambda w: w.send("check_restriction_for_asins", P.failing_check))
    w.at(hours * HOUR * 0.21, P.drift_warning)
    w.at(hours * HOUR * 0.66, P.drift_warning)


def _world(fmt, rate, tokens, seed, start, hours):
    w = World(fmt, rate, tokens, start, seed)
    w.banner()
    noise(w, hours)
    return w


def _open_wait(truth, task):
    return max((w[1] for w in truth.waits if w[0] == task and w[2] is None), default=None)


def _spent_after(w, task, since):
    return sum(v for k, v in w.truth.spent.items() if k != task) > 0


def two_task(directory, name, *, fmt, rate, tokens, hours, seed, start, up, bf, era, up_every=60.0,
             pending=0, per_hour=6.0, split=(), gz=True, faults=(), bf_at=25.0, resend_backfill=()):
    """The Upserter every ``up_every`` s and one continuous Backfiller, sharing one TokenManager."""
    w = _world(fmt, rate, tokens, seed, start, hours)
    tm = P.TokenManager(w, era)
    arrivals(w, per_hour, hours, pending)
    beat(w, "update_recent_deals", P.upserter, up_every, hours, first=0.0 if up_every <= 60 else 30.0, tm=tm, **up)
    for t in (bf_at,) + tuple(resend_backfill):
        w.at(t, lambda w: w.send("backfill_deals", P.backfiller, tm=tm, **bf))
    for t, fault in faults:
        w.at(t, fault)
    w.run(hours * HOUR)
    return w, write(w, Path(directory), name, split, gz)


# ---------------------------------------------------------------------------------------------
def seed_priority_inversion(d, fmt=None, seed=0):
    """S5 at the seed's numbers: Backfiller 5 x 20 + 80 = 180, Upserter 10 x 20 + 50 = 250 from 24."""
    w, paths = two_task(d, "celery_worker.log", fmt=fmt or "celery", rate=5, tokens=24, hours=26, seed=5 + seed,
                        start=datetime(2026, 2, 4, 8, 0, 3), era=P.Era(priority_pass=10),
                        up=dict(batch=10, cost_per_item=20, threshold=50, version="2.10"),
                        bf=dict(batch=5, cost_per_item=20, threshold=80), pending=300, split=(0.4,))
    since = _open_wait(w.truth, "update_recent_deals")
    assert since is not None and w.now - since > 20 * HOUR, "the Upserter's one run waits all day"
    assert "update_recent_deals" not in w.truth.saved and w.truth.saved["backfill_deals"] > 0
    return Incident("seed_priority_inversion", paths, ["starvation"], ["update_recent_deals"], "backfill_deals",
                    refill=5, targets={"update_recent_deals": 250, "backfill_deals": 180}, truth=w.truth)


def seed_after_fix_basic(d, fmt=None, seed=0):
    """The 02-04 fix (Upserter batch 5, target 150 < 180) with 300 pending deals: the Upserter now
    wins every refill and the Backfiller starves, in basicConfig lines without logger names."""
    w, paths = two_task(d, "worker.log", fmt=fmt or "basic", rate=5, tokens=24, hours=20, seed=6 + seed,
                        start=datetime(2026, 2, 5, 0, 0, 2), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50, version="2.11"),
                        bf=dict(batch=5, cost_per_item=20, threshold=80), pending=300)
    since = _open_wait(w.truth, "backfill_deals")
    assert since is not None and w.now - since > 10 * HOUR
    assert "backfill_deals" not in w.truth.saved and w.truth.saved["update_recent_deals"] > 0
    return Incident("seed_after_fix_basic", paths, ["starvation"], ["backfill_deals"], "update_recent_deals",
                    refill=5, targets={"update_recent_deals": 150, "backfill_deals": 180}, truth=w.truth)


def schedule_saturation_named(d, fmt=None, seed=0):
    """S7: an every-minute Upserter whose page fetch and small Priority-Pass batches take the whole
    refill; the Backfiller needs 6 x 20 + 60 = 180 and never gets it. Logger names, no processes."""
    w, paths = two_task(d, "deals.log", fmt=fmt or "named", rate=5, tokens=60, hours=16, seed=7 + seed,
                        start=datetime(2026, 2, 6, 9, 30, 0), era=P.Era(priority_pass=25, offset=5),
                        up=dict(batch=1, cost_per_item=20, threshold=40, version="2.12"),
                        bf=dict(batch=6, cost_per_item=20, threshold=60), per_hour=4.0)
    since = _open_wait(w.truth, "backfill_deals")
    assert since is not None and w.now - since > 10 * HOUR and "backfill_deals" not in w.truth.saved
    assert w.truth.spent["update_recent_deals"] > 0
    return Incident("schedule_saturation_named", paths, ["starvation"], ["backfill_deals"], "update_recent_deals",
                    refill=5, targets={"update_recent_deals": None, "backfill_deals": 180}, truth=w.truth)


def impossible_target_tasklogger(d, fmt=None, seed=0):
    """S6: the Backfiller reserves 20 x 20 + 80 = 480 against a bucket of 300 (5/min)."""
    w, paths = two_task(d, "celery.log", fmt=fmt or "celery_tasklogger", rate=5, tokens=120, hours=12, seed=8 + seed,
                        start=datetime(2026, 2, 4, 12, 0, 0), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50), up_every=600.0,
                        bf=dict(batch=20, cost_per_item=20, threshold=80), per_hour=3.0)
    assert 480 > w.keepa.cap and "backfill_deals" not in w.truth.saved
    return Incident("impossible_target_tasklogger", paths, ["unreachable_target"], ["backfill_deals"], None,
                    refill=5, targets={"backfill_deals": 480}, truth=w.truth)


def recovery_deadlock_basic(d, fmt=None, seed=0):
    """S4: the Backfiller spends 2 x 20 whenever it has 40, so the balance stays under 40; the
    cost-5 Upserter waits for 55 (threshold 50) and never runs."""
    w, paths = two_task(d, "worker.log", fmt=fmt or "basic", rate=5, tokens=30, hours=10, seed=9 + seed,
                        start=datetime(2026, 1, 31, 6, 0, 0), era=P.Era(page_pass=5, style="low_tokens"),
                        up=dict(batch=1, cost_per_item=5, threshold=50, version="2.05", page_threshold=50),
                        bf=dict(batch=2, cost_per_item=20, threshold=0), per_hour=20.0, bf_at=2.0)
    assert "update_recent_deals" not in w.truth.saved and w.truth.saved["backfill_deals"] > 0
    return Incident("recovery_deadlock_basic", paths, ["starvation"], ["update_recent_deals"], "backfill_deals",
                    refill=5, targets={"update_recent_deals": 55, "backfill_deals": 40}, truth=w.truth)


def wait_for_max_tasklogger(d, fmt=None, seed=0):
    """S1: the Backfiller waits for a full bucket (11 x 20 + 80 = 300 at 5/min) while the Upserter
    takes its page every minute whenever the balance covers it."""
    w, paths = two_task(d, "celery.log", fmt=fmt or "celery_tasklogger", rate=5, tokens=100, hours=12, seed=10 + seed,
                        start=datetime(2025, 11, 20, 0, 0, 0), era=P.Era(priority_pass=10, heartbeat=60),
                        up=dict(batch=1, cost_per_item=5, threshold=0), per_hour=2.0,
                        bf=dict(batch=11, cost_per_item=20, threshold=80))
    assert "backfill_deals" not in w.truth.saved
    return Incident("wait_for_max_tasklogger", paths, ["starvation"], ["backfill_deals"], "update_recent_deals",
                    refill=5, targets={"backfill_deals": 300}, truth=w.truth)


def deficit_spiral_celery(d, fmt=None, seed=0):
    """S2: a gate of 20 in front of an 18 x 20 batch: Keepa admits it at 20 and debits ~340."""
    era = P.Era(gate=20)      # the gate compares the balance with 20, not with the batch's cost
    w = _world(fmt or "celery", 5, 40, 11 + seed, datetime(2026, 1, 23, 0, 0, 0), 24)
    tm = P.TokenManager(w, era)
    arrivals(w, 30.0, 24, 200)
    beat(w, "update_recent_deals", P.upserter, 60.0, 24, tm=tm, batch=18, cost_per_item=20, threshold=0)
    w.at(30.0, lambda w: w.send("backfill_deals", P.backfiller, tm=tm, batch=5, cost_per_item=20, threshold=80))
    w.run(24 * HOUR)
    paths = write(w, Path(d), "celery_worker.log")
    assert w.keepa.min < -300
    return Incident("deficit_spiral_celery", paths, ["deficit_spiral"], None, "update_recent_deals", refill=5,
                    truth=w.truth)


def upgrade_peek_overrun(d, fmt=None, seed=0):
    """S12: at 25/min with burst 280 a 50-ASIN peek reserved as 100 costs ~400: Keepa's balance
    sinks to -150 or lower after every peek, and every run in between exits on a wait over 60 s."""
    w = _world(fmt or "celery", 25, 300, 18 + seed, datetime(2026, 7, 2, 0, 0, 0), 12)
    tm = P.TokenManager(w, P.Era())
    arrivals(w, 60.0, 12, 200)
    beat(w, "smart_ingestor", P.peek_overrun_ingestor, 60.0, 12, tm=tm, burst=280, reserve=100, actual=420,
         commit_cost=100)
    w.run(12 * HOUR)
    paths = write(w, Path(d), "celery_worker.log")
    assert w.keepa.min < -5 * 25 and w.truth.aborts["smart_ingestor"] > 100
    return Incident("upgrade_peek_overrun", paths, ["deficit_spiral"], None, "smart_ingestor", refill=25,
                    truth=w.truth)


def burst_below_batch(d, fmt=None, seed=0):
    """S9: burst 40, a scan of 100 behind a max deficit of -50: blocked, reverted, recharged, forever."""
    w = _world(fmt or "named", 5, 45, 19 + seed, datetime(2026, 2, 13, 8, 0, 0), 14)
    tm = P.TokenManager(w, P.Era())
    arrivals(w, 20.0, 14, 86)
    beat(w, "smart_ingestor", P.burst_below_batch_ingestor, 60.0, 14, tm=tm, burst=40, scan_cost=100,
         max_deficit=-50)
    w.run(14 * HOUR)
    paths = write(w, Path(d), "ingestor.log")
    assert not w.truth.saved and w.truth.aborts["smart_ingestor"] > 100
    return Incident("burst_below_batch", paths, ["livelock"], [], None, refill=None, truth=w.truth)


def peek_commit_livelock(d, fmt=None, seed=0):
    """S10: burst 40, a peek of 15 x 2 = 30 and a commit of 20 after a page of 5: the commit never fits."""
    w = _world(fmt or "celery", 5, 30, 12 + seed, datetime(2026, 2, 18, 10, 0, 0), 16)
    tm = P.TokenManager(w, P.Era())
    arrivals(w, 40.0, 16, 300)
    beat(w, "smart_ingestor", P.ingestor, 60.0, 16, tm=tm, burst=40, floor=20, scan=15, peek_cost=2,
         commit_cost=20)
    w.run(16 * HOUR)
    paths = write(w, Path(d), "celery_worker.log", split=(0.5,))
    assert not w.truth.saved and w.truth.aborts["smart_ingestor"] >= 50 and w.truth.spent["smart_ingestor"] > 1000
    return Incident("peek_commit_livelock", paths, ["livelock"], [], None, refill=5,
                    targets={"smart_ingestor": 40}, truth=w.truth)


def stale_projection_named(d, fmt=None, seed=0):
    """S11: the Redis projection reads -79 and never refills; each run computes a wait over 60 s and
    exits before syncing, so nothing is spent or saved for the whole log."""
    w = _world(fmt or "named", 20, 1200, 13 + seed, datetime(2026, 2, 13, 0, 0, 0), 12)
    tm = P.TokenManager(w, P.Era(stale_estimate=-79.0, exit_after=60))
    beat(w, "smart_ingestor", P.stale_projection_ingestor, 60.0, 12, tm=tm, commit_cost=20)
    w.run(12 * HOUR)
    paths = write(w, Path(d), "ingestor.log")
    assert not w.truth.saved and not w.truth.spent and w.truth.aborts["smart_ingestor"] > 600
    return Incident("stale_projection_named", paths, ["livelock"], [], None, refill=20, truth=w.truth)


def killed_upserter_stall(d, fmt=None, seed=0):
    """A healthy pipeline until the Upserter's pool process is SIGKILLed mid-wait: its Redis lock has
    no expiry, so every later tick logs 'already running' while nothing runs it."""
    t_kill = 7.4 * HOUR
    done = []

    def kill(w):   # the first moment after t_kill that an Upserter run is waiting
        for p, r in w.procs.items():
            if not done and r is not None and r.task == "update_recent_deals" and r.wait_since is not None:
                w.kill(p)
                done.append(w.now)
                return

    w, paths = two_task(d, "celery_worker.log", fmt=fmt or "celery", rate=10, tokens=200, hours=14, seed=14 + seed,
                        start=datetime(2026, 2, 20, 0, 0, 0), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50, version="2.13"), up_every=300.0,
                        bf=dict(batch=8, cost_per_item=20, threshold=80), per_hour=8.0,
                        faults=[(t_kill + k * 20.0, kill) for k in range(900)], split=(0.3, 0.7))
    for task, start, end, how in w.truth.waits:     # healthy until the kill
        assert end is None or end - start < HOUR or start > t_kill, (task, start, end)
    dead = [x for x in w.truth.deaths if x[0] == "update_recent_deals"]
    assert dead and w.locks.get("update_recent_deals"), "the dead run still holds the lock"
    assert w.truth.last_saved["update_recent_deals"] < dead[0][2]
    return Incident("killed_upserter_stall", paths, ["stall"], [], None, ["update_recent_deals"], refill=10,
                    truth=w.truth)


def deploy_loses_backfill(d, fmt=None, seed=0):
    """A deploy restarts the worker (Redis flushed); Beat re-sends the Upserter, but nothing re-sends
    the continuous Backfiller: its task is dead, not waiting."""
    w, paths = two_task(d, "worker.log", fmt=fmt or "named", rate=10, tokens=300, hours=12, seed=15 + seed,
                        start=datetime(2026, 3, 1, 0, 0, 0), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50), up_every=300.0,
                        bf=dict(batch=8, cost_per_item=20, threshold=80), per_hour=10.0,
                        faults=[(5.2 * HOUR, lambda w: w.restart(flush_redis=True))])
    assert w.truth.last_saved["backfill_deals"] < 5.2 * HOUR < w.truth.last_saved["update_recent_deals"]
    return Incident("deploy_loses_backfill", paths, ["stall"], [], None, ["backfill_deals"], refill=10,
                    truth=w.truth)


def deploy_keeps_locks(d, fmt=None, seed=0):
    """A deploy that does not flush Redis: both runs die with the old pool, their locks stay, and
    from then on every tick of either task logs 'already running'."""
    done = []

    def deploy(w):   # the first moment after 4.1 h that both tasks are mid-run
        busy = {r.task for r in w.procs.values() if r is not None}
        if not done and {"update_recent_deals", "backfill_deals"} <= busy:
            w.restart(flush_redis=False)
            done.append(w.now)

    w, paths = two_task(d, "celery_worker.log", fmt=fmt or "celery", rate=10, tokens=300, hours=10, seed=20 + seed,
                        start=datetime(2026, 3, 9, 0, 0, 0), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50), up_every=300.0,
                        bf=dict(batch=8, cost_per_item=20, threshold=80), per_hour=10.0,
                        faults=[(4.1 * HOUR + k * 5.0, deploy) for k in range(2000)],
                        resend_backfill=tuple(5.2 * HOUR + k * HOUR for k in range(4)))
    assert done and w.locks.get("update_recent_deals") and w.locks.get("backfill_deals")
    assert max(w.truth.last_saved.values()) <= done[0]
    return Incident("deploy_keeps_locks", paths, ["stall"], [], None, ["backfill_deals", "update_recent_deals"],
                    refill=10, truth=w.truth)


def hung_backfill(d, fmt=None, seed=0):
    """The Backfiller's call never returns: no error, no line, its lock held; Beat's hourly
    re-send of it skips. It went silent while it had work."""
    def hang(w):
        for p, r in w.procs.items():
            if r is not None and r.task == "backfill_deals":
                w.hang(p)
                return

    w, paths = two_task(d, "celery_worker.log", fmt=fmt or "celery_tasklogger", rate=20, tokens=500, hours=10,
                        seed=21 + seed, start=datetime(2026, 3, 20, 0, 0, 0), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50), up_every=600.0,
                        bf=dict(batch=10, cost_per_item=20, threshold=100), per_hour=10.0,
                        faults=[(3.3 * HOUR, hang)], resend_backfill=tuple(k * HOUR + 90.0 for k in range(1, 10)))
    assert any(x[0] == "backfill_deals" and x[3] == "hung" for x in w.truth.deaths)
    assert w.truth.last_saved["backfill_deals"] < 3.3 * HOUR < w.truth.last_saved["update_recent_deals"]
    return Incident("hung_backfill", paths, ["stall"], [], None, ["backfill_deals"], refill=20, truth=w.truth)


def healthy_named(d, fmt=None, seed=0):
    """Both tasks wait and are granted within minutes; Upserter every 5 min, batch 5 (150), Backfiller 8 (240)."""
    w, paths = two_task(d, "deals.log", fmt=fmt or "named", rate=10, tokens=150, hours=24, seed=16 + seed,
                        start=datetime(2026, 3, 2, 16, 45, 0), era=P.Era(priority_pass=10),
                        up=dict(batch=5, cost_per_item=20, threshold=50, version="2.13-Sched-5m"), up_every=300.0,
                        bf=dict(batch=8, cost_per_item=20, threshold=80), per_hour=6.0)
    _assert_healthy(w)
    return Incident("healthy_named", paths, ["healthy"], [], None, refill=10,
                    targets={"update_recent_deals": 150, "backfill_deals": 240}, truth=w.truth)


def healthy_through_a_deploy(d, fmt=None, seed=0):
    """Healthy, with a deploy in the middle (Redis flushed, the Backfiller re-sent after it) and a
    restriction check's process killed by the OOM killer: neither is an incident."""
    def kill_checker(w):
        for p, r in w.procs.items():
            if r is not None and r.task == "check_restriction_for_asins":
                w.kill(p)
                return

    w, paths = two_task(d, "celery_worker.log", fmt=fmt or "celery", rate=20, tokens=400, hours=18, seed=17 + seed,
                        start=datetime(2026, 6, 10, 0, 0, 0), era=P.Era(priority_pass=10, exit_after=None),
                        up=dict(batch=5, cost_per_item=20, threshold=50), up_every=600.0,
                        bf=dict(batch=10, cost_per_item=20, threshold=100), per_hour=12.0,
                        faults=[(9.0 * HOUR, lambda w: w.restart(flush_redis=True))]
                        + [(3 * HOUR + k * 7.0, kill_checker) for k in range(40)],
                        resend_backfill=(9.0 * HOUR + 40.0,), split=(0.5,))
    assert w.truth.restarts
    _assert_healthy(w, after_restart=True)
    return Incident("healthy_through_a_deploy", paths, ["healthy"], [], None, refill=20, truth=w.truth,
                    raw_lines=w.raw_lines)


def _assert_healthy(w, after_restart=False):
    for task, start, end, how in w.truth.waits:
        length = (end if end is not None else w.now) - start
        assert length < HOUR, (task, start, length, how)
    assert w.keepa.min > -5 * w.keepa.rate
    for task in ("update_recent_deals", "backfill_deals"):
        assert w.now - w.truth.last_saved[task] < HOUR, task


ALL = [seed_priority_inversion, seed_after_fix_basic, schedule_saturation_named, impossible_target_tasklogger,
       recovery_deadlock_basic, wait_for_max_tasklogger, deficit_spiral_celery, upgrade_peek_overrun,
       burst_below_batch, peek_commit_livelock,
       stale_projection_named, killed_upserter_stall, deploy_loses_backfill, deploy_keeps_locks, hung_backfill,
       healthy_named,
       healthy_through_a_deploy]
