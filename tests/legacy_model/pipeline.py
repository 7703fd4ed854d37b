"""The legacy pipeline's tasks and its TokenManager eras (incidents.md), as model runs.

Each task body is a generator ``body(world, run, **params)`` that yields sleeps. Lines are
literal strings from legacy-logs.md; a Keepa call's line is written when its response
arrives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from .world import CELERY_NAME, MODULE, keepa_minutes

TM = "keepa_deals.token_manager"
API = "keepa_deals.keepa_api"


@dataclass
class Era:
    """How the TokenManager of one period behaves."""
    offset: float = 0.0            # it waits for target + offset (the 02-04 code waited for target + 5)
    priority_pass: float = 0.0     # calls costing at most this skip the wait if the balance covers them
    page_pass: float = 10.0        # what it asks for a deal page (Keepa charges 5)
    exit_after: float | None = None  # 'wait > 60 s: exit the task' (02-13 on)
    heartbeat: float | None = None   # seconds between heartbeat lines while sleeping
    stale_estimate: float | None = None  # a Redis projection that never refills (S11)
    gate: float | None = None        # admit once the balance reaches this, whatever the call costs (S2)
    style: str = "insufficient"      # or "low_tokens": the 01-31 'go above 50, else wait for 55' lines


def _prefix(run):
    return "%s[%s]" % (CELERY_NAME[run.task], run.id)


def say(w, run, level, logger, msg):
    w.log(level, run.process, logger, msg, task_prefix=_prefix(run))


class TokenManager:
    def __init__(self, world, era: Era):
        self.w, self.era = world, era

    def estimate(self) -> float:
        if self.era.stale_estimate is not None:
            return self.era.stale_estimate
        return self.w.keepa.balance()

    def _wait_ends(self, run, how):
        if run.wait_since is not None:
            self.w.truth.waits.append((run.task, run.wait_since, self.w.now, how))
            run.wait_since = None

    def acquire(self, run, cost, threshold):
        """Wait until the balance covers cost + threshold; False if the era makes the task give up."""
        w, era = self.w, self.era
        target = era.gate if era.gate is not None else cost + threshold
        waited = False
        while True:
            b = self.estimate()
            if era.priority_pass and cost <= era.priority_pass and b > cost:
                say(w, run, "INFO", TM, "Priority Pass: allowing small cost %d. Balance: %.2f" % (cost, b))
                self._wait_ends(run, "granted")
                return True
            if b >= target + era.offset:
                if waited:
                    say(w, run, "INFO", TM, "Tokens recovered (%.2f >= %d). Resuming." % (b, target))
                self._wait_ends(run, "granted")
                return True
            secs = int(math.ceil((target + era.offset - b) * 60.0 / w.keepa.rate))
            if era.exit_after is not None and secs > era.exit_after:
                say(w, run, "WARNING", TM, "Insufficient tokens (Current: %.2f, Target: %d). Wait %ds > %ds. "
                                           "Exiting task." % (b, target, secs, era.exit_after))
                w.truth.add(w.truth.aborts, run.task)
                self._wait_ends(run, "gave_up")
                return False
            if b <= 0:
                say(w, run, "WARNING", TM, "Zero or negative tokens. Have: %.2f. Waiting for %d seconds to ensure "
                                           "a positive balance." % (b, secs))
            elif era.style == "low_tokens":
                say(w, run, "WARNING", TM, "Low tokens (Below Threshold %d). Have: %.2f. Waiting for %d seconds to "
                                           "recover to %d." % (threshold, b, secs, target + era.offset))
            else:
                say(w, run, "WARNING", TM, "Insufficient tokens (Current: %.2f, Target: %d). Waiting for %ds."
                    % (b, target, secs))
                say(w, run, "INFO", TM, "Entered wait loop. Initial Wait: %ds. Target: %d" % (secs, target))
            if run.wait_since is None:
                run.wait_since = w.now
            waited = True
            if era.heartbeat:
                left = secs
                while left > era.heartbeat:
                    yield era.heartbeat
                    left -= era.heartbeat
                    say(w, run, "INFO", TM, "[Heartbeat] Waiting for tokens... Current: %.2f. Target: %d. "
                                            "Remaining: %ds" % (self.estimate(), target, left))
                yield left + w.rng.uniform(0.5, 3.0)
            else:
                yield secs + w.rng.uniform(2.0, 30.0)

    def sync(self, run):
        yield self.w.rng.uniform(0.1, 0.4)
        say(self.w, run, "INFO", API, "Successfully retrieved token status: %s" % self.w.keepa.status())
        old = self.estimate()
        new = float(math.floor(self.w.keepa.balance()))
        say(self.w, run, "INFO", TM, "Token count authoritatively synced from API response. Previous estimate: "
                                     "%.2f, New value: %.2f" % (old, new))


def keepa_call(w, run, cost, what, items=0):
    """One metered call; its line is written when the response arrives."""
    yield w.rng.uniform(0.4, 2.5)
    consumed, left = w.keepa.call(cost)
    if consumed == 0:
        say(w, run, "WARNING", API, "429 ERROR. Keepa reported 0 tokens consumed for this failed call. "
                                    "Tokens left: %d" % left)
        return False
    w.truth.add(w.truth.spent, run.task, consumed)
    text = {"page": "Fetched %d deals. Tokens consumed: %d. Tokens left: %d" % (items, consumed, left),
            "batch": "Batch API call successful. Tokens consumed: %d. Tokens left: %d" % (consumed, left),
            "peek": "Lightweight batch call successful. Tokens consumed: %d. Tokens left: %d" % (consumed, left)}[what]
    say(w, run, "INFO", API, text)
    return True


def _asin(w):
    return "B0" + "".join(w.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(8))


def _iso(w, ago_min=0):
    dt = (w.start + timedelta(seconds=w.now, minutes=-ago_min)).replace(second=0, microsecond=0)
    return dt.strftime("%Y-%m-%dT%H:%M:00+00:00"), keepa_minutes(dt)


def take_lock(w, run, name) -> bool:
    """The Redis lock without expiry: a duplicate finds it held, says so and skips."""
    if w.locks.get(name):
        say(w, run, "INFO", MODULE[name], "--- Task: %s is already running. Skipping execution. ---" % name)
        return False
    w.locks[name] = run.id
    return True


def saved(w, task, n):
    w.truth.add(w.truth.saved, task, n)
    w.truth.last_saved[task] = w.now


def upserter(w, run, tm: TokenManager, batch: int, cost_per_item: float, threshold: float, version="2.11",
             page_threshold: float = 0.0):
    name, mod = "update_recent_deals", MODULE["update_recent_deals"]
    if not take_lock(w, run, name):
        return
    say(w, run, "INFO", mod, "--- Task: %s started (Version: %s) ---" % (name, version))
    iso, km = w.redis.setdefault("watermark", _iso(w, 60))
    say(w, run, "INFO", mod, "Loaded watermark: %s (Keepa time: %d)" % (iso, km))
    ok = yield from tm.acquire(run, tm.era.page_pass, page_threshold)
    if not ok:
        w.locks.pop(name, None)
        return
    n_new = w.redis.get("pending", 0)
    yield from keepa_call(w, run, 5, "page", items=150)
    say(w, run, "INFO", mod, "Stop Trigger: Deal %s (Update: %d) <= Watermark (%d). Diff: %d min."
        % (_asin(w), km - 20, km, 20))
    say(w, run, "INFO", mod, "Step 2 Complete: Found %d new deals." % n_new)
    if n_new:
        batches = int(math.ceil(n_new / batch))
        say(w, run, "INFO", mod, "Step 3: Fetching product data for %d deals in %d batch(es) of up to %d."
            % (n_new, batches, batch))
        for k in range(batches):
            size = min(batch, n_new - k * batch)
            ok = yield from tm.acquire(run, batch * cost_per_item, threshold)
            if not ok:
                w.locks.pop(name, None)
                return
            w.truth.add(w.truth.grants, name)
            yield from keepa_call(w, run, size * cost_per_item * w.rng.uniform(0.85, 1.0), "batch")
        yield w.rng.uniform(0.3, 1.0)
        say(w, run, "INFO", mod, "Step 6 Complete: Successfully upserted/updated %d rows." % n_new)
        saved(w, name, n_new)
        w.redis["pending"] -= n_new
        w.redis["watermark"] = _iso(w, 2)
        say(w, run, "INFO", mod, "Successfully updated watermark to %s" % w.redis["watermark"][0])
        if w.noise:
            w.send("check_restriction_for_asins", restriction_check, n=n_new)
    say(w, run, "INFO", mod, "--- Task: %s finished ---" % name)
    w.locks.pop(name, None)


def backfiller(w, run, tm: TokenManager, batch: int, cost_per_item: float, threshold: float, page=4, chunk=22):
    name, mod = "backfill_deals", MODULE["backfill_deals"]
    if not take_lock(w, run, name):
        return
    page, chunk = w.redis.get("backfill", (page, chunk))
    say(w, run, "INFO", mod, "--- Task: %s started ---" % name)
    say(w, run, "INFO", mod, "--- Resuming backfill from page %d, chunk %d ---" % (page, chunk))
    while True:
        ok = yield from tm.acquire(run, batch * cost_per_item, threshold)
        if not ok:
            w.locks.pop(name, None)
            return
        w.truth.add(w.truth.grants, name)
        if (yield from keepa_call(w, run, batch * cost_per_item * w.rng.uniform(0.8, 0.95), "batch")):
            yield w.rng.uniform(0.5, 2.0)
            chunk += 1
            if chunk > 30:
                page, chunk = page + 1, 0
            w.redis["backfill"] = (page, chunk)
            say(w, run, "INFO", mod, "--- Backfill state saved. Page: %d, Chunk: %d ---" % (page, chunk))
            saved(w, name, batch)
        yield w.rng.uniform(0.5, 2.0)


def ingestor(w, run, tm: TokenManager, burst: float, floor: float, scan: int, peek_cost: float, commit_cost: float,
             version="3.8-Peek-Commit", pass_rate: float = 0.15):
    """The Smart Ingestor (02-09 on): Recharge Mode, a deal page, a peek at cheap stats, then commits."""
    name, mod = "smart_ingestor", MODULE["smart_ingestor"]
    rate = w.keepa.rate
    if not take_lock(w, run, name):
        return

    def pause(reason):
        say(w, run, "WARNING", mod, "--- Task Paused: %s. Releasing lock to free worker. ---" % reason)
        w.truth.add(w.truth.aborts, name)
        w.locks.pop(name, None)

    say(w, run, "INFO", mod, "--- Task: %s started (Version: %s) ---" % (name, version))
    if w.redis.get("recharge"):
        b = tm.estimate()
        if b < burst:
            say(w, run, "INFO", TM, "Recharge Mode Active (Tokens: %.2f/%d). Waiting for refill..." % (b, burst))
            secs = int(math.ceil((burst - b) * 60 / rate))
            if secs > 60:
                say(w, run, "WARNING", TM, "Recharge Mode: Tokens critically low (%.2f). Required wait: %ds. "
                                           "Executing FORCE SYNC to verify state." % (b, secs))
                yield from tm.sync(run)
                b = float(math.floor(w.keepa.balance()))
                secs = int(math.ceil((burst - b) * 60 / rate))
                if secs > 60:
                    say(w, run, "WARNING", TM, "Recharge Mode: Still critically low after Sync (%.2f). Required "
                                               "wait: %ds. Exiting task." % (b, secs))
                    pause("Recharge needed: %ds" % secs)
                    return
            say(w, run, "INFO", TM, "Entered wait loop. Estimated Wait: %ds to reach %d tokens." % (secs, burst))
            run.wait_since = w.now
            yield secs + w.rng.uniform(0.1, 1.0)
            say(w, run, "INFO", TM, "Wait complete. Syncing tokens...")
            b = w.keepa.balance()
            say(w, run, "INFO", TM, "Tokens after wait: %.2f" % b)
        say(w, run, "INFO", TM, "Burst threshold reached (%.2f >= %d). Exiting Recharge Mode." % (tm.estimate(), burst))
        tm._wait_ends(run, "granted")
        w.redis["recharge"] = False
    iso, km = w.redis.setdefault("watermark", _iso(w, 24 * 60))
    say(w, run, "INFO", mod, "Loaded watermark: %s (Keepa time: %d)" % (iso, km))
    yield from keepa_call(w, run, 5, "page", items=150)
    say(w, run, "INFO", mod, "Stop Trigger: Deal %s <= Watermark." % _asin(w))
    found = w.redis.get("pending", 0)
    k = min(scan, found)
    say(w, run, "INFO", mod, "Found %d new deals since watermark (limit 50); scanning %d." % (found, k))
    if k == 0:
        say(w, run, "INFO", mod, "Task Complete: Processed 0 scanned, upserted 0.")
        w.locks.pop(name, None)
        return
    b = tm.estimate()
    need = peek_cost * k
    if b < need:
        secs = int(math.ceil((need - b) * 60 / rate))
        say(w, run, "INFO", TM, "Entered wait loop. Estimated Wait: %ds to reach %d tokens." % (secs, need))
        run.wait_since = w.now
        yield secs + w.rng.uniform(0.5, 3.0)
        tm._wait_ends(run, "granted")
    yield from keepa_call(w, run, need * w.rng.uniform(0.94, 1.03), "peek")
    passed = max(1, int(round(k * pass_rate)))
    for _ in range(k - passed):
        say(w, run, "INFO", mod, "Peek Rejected: ASIN %s" % _asin(w))
    say(w, run, "INFO", mod, "Peek complete: %d of %d candidates passed. Committing in batches of 5." % (passed, k))
    b = tm.estimate()
    if b < commit_cost:
        say(w, run, "WARNING", TM, "Tokens critically low (%.2f < %d). Entering Recharge Mode until %d."
            % (b, commit_cost, burst))
        w.redis["recharge"] = True
        secs = int(math.ceil((commit_cost - b) * 60 / rate))
        if secs > 60:
            say(w, run, "WARNING", TM, "Insufficient tokens (Current: %.2f, Target: %d). Wait %ds > 60s. "
                                       "Exiting task." % (b, commit_cost, secs))
            pause("Insufficient tokens: wait %ds" % secs)
            return
        yield secs
    w.truth.add(w.truth.grants, name)
    yield from keepa_call(w, run, commit_cost * w.rng.uniform(0.9, 1.0), "batch")
    saved(w, name, passed)
    w.redis["pending"] = found - k
    w.redis["watermark"] = _iso(w, 1)
    say(w, run, "INFO", mod, "Watermark ratcheted to %s" % w.redis["watermark"][0])
    say(w, run, "INFO", mod, "Task Complete: Processed %d scanned, upserted %d." % (k, passed))
    w.locks.pop(name, None)


def stale_projection_ingestor(w, run, tm: TokenManager, commit_cost: float, version="3.9-Stale"):
    """S11: the Redis projection is stuck below zero; every run computes a wait over 60 s and exits
    before it would sync."""
    name, mod = "smart_ingestor", MODULE["smart_ingestor"]
    if not take_lock(w, run, name):
        return
    say(w, run, "INFO", mod, "--- Task: %s started (Version: %s) ---" % (name, version))
    yield w.rng.uniform(0.01, 0.05)
    ok = yield from tm.acquire(run, commit_cost, 0)
    if not ok:
        say(w, run, "WARNING", mod, "--- Task Paused: Insufficient tokens: wait >60s. Releasing lock to free "
                                    "worker. ---")
    w.locks.pop(name, None)


def peek_overrun_ingestor(w, run, tm: TokenManager, burst: float, reserve: float, actual: float,
                          commit_cost: float, version="4.2-Upgrade"):
    """S12: after the upgrade a 50-ASIN peek reserved as 100 really costs ~400, so each run that
    gets past the burst digs Keepa's balance deep below zero; the runs after it compute a wait
    over 60 s and exit, syncing at most every 300 s."""
    name, mod = "smart_ingestor", MODULE["smart_ingestor"]
    rate = w.keepa.rate
    if not take_lock(w, run, name):
        return
    say(w, run, "INFO", mod, "--- Task: %s started (Version: %s) ---" % (name, version))
    elapsed = w.now - w.redis.get("synced", -1e9)
    if elapsed >= 300:
        yield from tm.sync(run)
        w.redis["synced"] = w.now
    else:
        say(w, run, "INFO", TM, "Skipping sync_tokens (throttled, force=True, elapsed=%.1fs)." % elapsed)

    def give_up(b, target):
        secs = int(math.ceil((target - b) * 60 / rate))
        say(w, run, "WARNING", TM, "Insufficient tokens (Current: %.2f, Target: %d). Wait %ds > 60s. Exiting task."
            % (b, target, secs))
        say(w, run, "WARNING", mod, "--- Task Paused: Insufficient tokens: wait %ds. Releasing lock to free "
                                    "worker. ---" % secs)
        w.truth.add(w.truth.aborts, name)
        w.locks.pop(name, None)

    b = tm.estimate()
    if (burst - b) * 60 / rate > 60:
        give_up(b, burst)
        return
    iso, km = w.redis.setdefault("watermark", _iso(w, 12 * 60))
    say(w, run, "INFO", mod, "Loaded watermark: %s (Keepa time: %d)" % (iso, km))
    yield from keepa_call(w, run, 5, "page", items=150)
    say(w, run, "INFO", mod, "Found %d new deals since watermark (limit 50); scanning 50." % w.redis.get("pending", 0))
    say(w, run, "INFO", TM, "Reserving %d tokens for peek of 50 ASINs." % reserve)
    yield from keepa_call(w, run, actual * w.rng.uniform(0.92, 1.08), "peek")
    say(w, run, "INFO", mod, "Peek complete: 6 of 50 candidates passed. Committing in batches of 5.")
    b = tm.estimate()
    if (commit_cost - b) * 60 / rate > 60:
        give_up(b, commit_cost)
        return
    yield from keepa_call(w, run, commit_cost, "batch")
    saved(w, name, 6)
    say(w, run, "INFO", mod, "Task Complete: Processed 50 scanned, upserted 6.")
    w.locks.pop(name, None)


def burst_below_batch_ingestor(w, run, tm: TokenManager, burst: float, scan_cost: float, max_deficit: float,
                               version="3.5-Burst"):
    """S9: burst 40 against a scan of 20 x ~5 = 100: the reservation is blocked, reverted, and the
    run enters Recharge Mode; the next run recharges to 40 and is blocked again."""
    name, mod = "smart_ingestor", MODULE["smart_ingestor"]
    rate = w.keepa.rate
    if not take_lock(w, run, name):
        return
    say(w, run, "INFO", mod, "--- Task: %s started (Version: %s) ---" % (name, version))
    b = tm.estimate()
    if w.redis.get("recharge"):
        if b < burst:
            say(w, run, "INFO", TM, "Recharge Mode Active (Tokens: %.2f/%d). Waiting for refill..." % (b, burst))
            secs = int(math.ceil((burst - b) * 60 / rate))
            say(w, run, "WARNING", mod, "--- Task Paused: Recharge needed: %ds. Releasing lock to free worker. ---"
                % secs)
            w.truth.add(w.truth.aborts, name)
            w.locks.pop(name, None)
            return
        say(w, run, "INFO", TM, "Burst threshold reached (%.2f >= %d). Exiting Recharge Mode." % (b, burst))
        w.redis["recharge"] = False
    yield from keepa_call(w, run, 5, "page", items=150)
    b = tm.estimate()
    projected = b - scan_cost
    if projected < max_deficit:
        say(w, run, "WARNING", TM, "Request blocked: Projected balance %.2f exceeds max deficit %d." % (
            projected, max_deficit))
        say(w, run, "WARNING", TM, "Tokens critically low (%.2f < %d). Entering Recharge Mode until %d." % (
            b, 1, burst))
        w.redis["recharge"] = True
        say(w, run, "WARNING", mod, "--- Task Paused: Recharge needed. Releasing lock to free worker. ---")
        w.truth.add(w.truth.aborts, name)
        w.locks.pop(name, None)
        return
    yield from keepa_call(w, run, scan_cost, "batch")
    saved(w, name, 20)
    say(w, run, "INFO", mod, "Task Complete: Processed 20 scanned, upserted 3.")
    w.locks.pop(name, None)


# -- noise -------------------------------------------------------------------------------------
def restriction_check(w, run, n=3):
    mod = MODULE["check_restriction_for_asins"]
    say(w, run, "INFO", mod, "Starting restriction check for %d ASINs (user_id=1)." % n)
    bad = 0
    for _ in range(n):
        yield w.rng.uniform(0.3, 1.0)
        if w.rng.random() < 0.05:
            say(w, run, "WARNING", mod, "SP-API throttled getListingsRestrictions for %s (HTTP 429 "
                                        "QuotaExceeded). Retrying in 2s." % _asin(w))
            yield 2.0
        r = w.rng.random() < 0.3
        bad += r
        say(w, run, "INFO", mod, "Restriction for %s: %s" % (
            _asin(w), "APPROVAL_REQUIRED (condition=used_good)" if r else "not restricted"))
    say(w, run, "INFO", mod, "Restriction check complete: %d of %d ASINs restricted." % (bad, n))


def janitor(w, run):
    mod = MODULE["clean_stale_deals"]
    say(w, run, "INFO", mod, "--- Task: clean_stale_deals started ---")
    yield w.rng.uniform(0.5, 3.0)
    k = w.rng.randint(0, 40)
    say(w, run, "INFO", mod, "Janitor: Found %d deals not seen in the last 72 hours." % k)
    say(w, run, "INFO", mod, "Janitor: Deleted %d stale deals. Remaining deals: %d." % (k, w.rng.randint(50, 900)))


def failing_check(w, run):
    yield 0.2
    w.log("ERROR", run.process, "celery.app.trace", "Task %s[%s] raised unexpected: OperationalError('database is "
                                                  "locked')" % (CELERY_NAME[run.task], run.id))
    for text in ["Traceback (most recent call last):",
                 '  File "/srv/app/keepa_deals/sp_api_tasks.py", line 88, in check_restriction_for_asins',
                 "    cur.execute(sql, params)", "sqlite3.OperationalError: database is locked"]:
        w.raw(text)
    run.alive = False   # raised: no 'succeeded' line
    if w.procs.get(run.process) is run:
        w.procs[run.process] = None
    w._dispatch()


def drift_warning(w):
    dt = w.start + timedelta(seconds=w.now)
    w.log("WARNING", "MainProcess", "celery.events.state",
          "Substantial drift from celery@agentarbitrage-monitor may mean clocks are out of sync.  Current drift is "
          "73 seconds.  [orig: %s recv: %s]" % (dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
                                                (dt + timedelta(seconds=73)).strftime("%Y-%m-%d %H:%M:%S.%f")))
    w.log("WARNING", "MainProcess", "py.warnings", "/srv/app/keepa_deals/stats.py:41: RuntimeWarning: invalid value "
                                                   "encountered in divide")
    w.raw("  ratio = gains / spend")
