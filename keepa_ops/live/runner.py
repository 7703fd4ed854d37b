"""The live runner: the engine on the real clock, over HTTP, into SQLite.

With no Keepa URL and no KEEPA_API_KEY it starts the embedded fake Keepa on
127.0.0.1, so the main job runs with no key and no network.

Invariants: it stops cleanly on SIGINT/SIGTERM (the batch in flight either
commits or rolls back); a restart resumes from the stored watermark and
checkpoint; the key is never written anywhere.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..keepa.client import DEFAULT_URL, ApiKey, KeepaClient
from ..core.clock import RealClock
from ..config import load_config
from ..core.engine import Engine
from ..errors import KeepaOpsError, NotEnoughTokens
from ..core.events import EventLog
from ..gate.admission import SharedAdmission
from ..gate.gate import Gate
from .fake_server import FakeKeepa
from .store import DealStore
from .transport import HttpTransport

EMBEDDED_KEY = "embedded-fake-keepa"


@dataclass
class LiveResult:
    db: Path
    events_path: Path | None
    keepa_url: str
    embedded: bool
    seconds: float
    tasks: dict
    stored: dict
    faults: int
    stopped_by: str | None

    def summary(self) -> dict:
        return {"db": str(self.db), "events": str(self.events_path) if self.events_path else None,
                "keepa_url": self.keepa_url, "embedded_fake_keepa": self.embedded,
                "keepa_seconds": self.seconds, "tasks": self.tasks, "stored": self.stored,
                "faults": self.faults, "stopped_by": self.stopped_by}


class _Progress:
    """Prints one heartbeat every ``every`` wall seconds from the event stream: Keepa time, the
    balance, each task's deals and grants, and, against ``duration``, how far and the ETA."""

    def __init__(self, engine: Engine, out, every: float = 2.0, duration: float | None = None,
                 speed: float = 1.0):
        self.engine, self.out, self.every, self.duration, self.speed = engine, out, every, duration, speed
        self.last = 0.0

    def __call__(self, row):
        now = time.monotonic()
        if self.out is None or now - self.last < self.every:
            return
        self.last = now
        parts = [f"{st.name}: {st.items} deals, {st.grants} grants" + (" (waiting)" if st.req else "")
                 for st in self.engine.states]
        where = f"t={row.t / 60:.1f} keepa-min"
        if self.duration:
            done = min(1.0, max(0.0, row.t / self.duration))
            eta = max(0.0, (self.duration - row.t) / self.speed)
            where += f" ({100 * done:.0f}% of {self.duration / 60:g} min, ETA {eta:.0f} s)"
        self.out.write(f"[keepa-ops] {where} balance={row.balance:.0f} | " + " | ".join(parts) + "\n")
        self.out.flush()


class _Sink:
    """Writes each event as a JSON line and keeps the runs table in step."""

    def __init__(self, log: EventLog, fh, store: DealStore, progress):
        self.log, self.fh, self.store, self.progress = log, fh, store, progress

    def __call__(self, row):
        if self.fh is not None:
            self.fh.write(self.log.to_json(row) + "\n")
            self.fh.flush()
        if row.event == "run_start":
            self.store.run_started(row.task)
        elif row.event == "run_finish":
            self.store.run_finished(row.task, (row.detail or {}).get("outcome", "ok"), row.items or 0)
        self.progress(row)


def _check_fake_speed(url: str, speed: float) -> None:
    """A clock ``speed`` times faster is only for a fake Keepa that runs at that speed (it says so)."""
    import requests

    said = None
    try:
        r = requests.get(url.rstrip("/") + "/__fake__/report", timeout=5)
        if r.status_code == 200:
            said = float(r.json().get("speed"))
    except (requests.RequestException, ValueError, TypeError, AttributeError):
        said = None
    if said != float(speed):
        raise KeepaOpsError(f"--speed {speed:g} runs the clock {speed:g}x faster, but {url} is not a fake Keepa "
                            f"running at that speed" + (f" (it runs at {said:g}x)" if said else "") +
                            ". Fix: drop --speed (real Keepa runs at 1x), or start the fake with the same --speed.")


def run_live(config, db, *, keepa_url: str | None = None, duration: float | None = None,
             speed: float = 1.0, events_path=None, progress=sys.stderr, install_signals: bool = True,
             fake: FakeKeepa | None = None, bucket: str | None = None, tasks=None,
             fake_unless_url: bool = False) -> LiveResult:
    """Run ``config`` live until ``duration`` Keepa-seconds pass or a signal arrives.

    ``bucket`` (a URL: ``sqlite:///path`` or ``redis://host:port/db``) shares the key's bucket
    and policy with every other process on it; ``tasks`` runs only those tasks of the config.
    ``fake_unless_url``: only ``keepa_url`` can name a real Keepa; without it the embedded fake
    runs, whatever key the environment holds (the pipeline's rule: a report never spends tokens
    by accident). A ``speed`` other than 1 is refused against a server that is not a fake
    Keepa running at that speed.
    """
    full = load_config(config)
    cfg = full.only_tasks(tasks) if tasks else full
    key = ApiKey.from_env(cfg.keepa.key_file)
    url = keepa_url or cfg.keepa.url
    if fake_unless_url and keepa_url is None:
        url, key = None, None
    embedded = False
    if url is None and key is None:
        if fake is None:
            fake = FakeKeepa.from_config(cfg, speed)
            fake.serve()
            embedded = True
        url, key = fake.url, ApiKey(EMBEDDED_KEY)
    elif key is None:
        raise KeepaOpsError(f"no API key for {url}. Fix: set KEEPA_API_KEY or keepa.key_file "
                            "(or omit the URL to use the embedded fake Keepa).")
    elif url is None:
        url = DEFAULT_URL
    if not embedded and fake is None and speed != 1:
        _check_fake_speed(url, speed)

    clock = RealClock(speed)
    gate = store = None
    try:
        if bucket:  # an unreachable or wrong bucket is one clear line, before the store is touched
            gate = Gate.from_url(bucket, full, scale=speed)
            gate.state()
        store = DealStore(db)
        store.claim(cfg.tasks)
    except BaseException:
        for opened in (store, gate):
            if opened is not None:
                opened.close()
        if embedded:
            fake.shutdown()
        raise
    client = KeepaClient(key, url, timeout=cfg.keepa.timeout, retries=cfg.keepa.retries,
                         backoff=cfg.keepa.backoff, sleep=clock.pause)
    transport = HttpTransport(client, cfg.keepa, speed)
    store.now_fn = transport.server_now
    events_path = Path(events_path) if events_path else None
    fh = open(events_path, "a") if events_path else None
    log = EventLog(datetime.now(timezone.utc))
    engine = Engine(cfg, clock, transport, store, log, policy=SharedAdmission(gate) if gate else None)
    if gate is not None:
        engine.policy.on_fault = engine.fault
    log.on_event = _Sink(log, fh, store, _Progress(engine, progress, duration=duration, speed=speed))
    client.on_fault = engine.fault

    stopped_by = []

    def _stop(signum, frame):
        stopped_by.append(signal.Signals(signum).name)
        engine.stop()

    old = {}
    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, _stop)
    try:
        try:
            env = client.token_status()
        except NotEnoughTokens as e:  # /token is free, but a 429 still tells the balance
            env = e.envelope
        transport._saw(env)
        engine.sync(env, always=True)
        engine.policy.settle(None, env, 0.0, engine.bucket, clock.now())
        engine.run(until=duration if duration is not None else math.inf)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        client.close()
        if gate is not None:
            gate.close()
        if fh is not None:
            fh.close()
        stored = store.counts()
        store.close()
        if embedded:
            fake.shutdown()
    tasks = {st.name: {"grants": st.grants, "items": st.items, "tokens_spent": st.spent,
                       "max_wait_s": st.max_wait, "runs": st.runs, "refused_429": st.refused,
                       "failed_runs": st.faults} for st in engine.states}
    faults = sum(1 for r in log.rows if r.event == "fault")
    return LiveResult(Path(db), events_path, url, embedded, engine.ended_at - engine.t0, tasks, stored,
                      faults, stopped_by[0] if stopped_by else None)
