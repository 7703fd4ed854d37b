"""Write an engine event log as the legacy Celery pipeline would have logged it.

Used to make realistic incident logs whose ground truth is known (the simulator's),
so "simulate, emit, parse, diagnose" can be checked end to end.

Invariants: every line uses the Celery worker default format with the message
templates of the legacy pipeline's logs; token-manager lines carry no task name
(only the worker process tells whose they are), as in production; lines are in
time order.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

CELERY_NAMES = {"upserter": "keepa_deals.simple_task.{name}", "backfiller": "keepa_deals.backfiller.{name}"}


def _ts(start, t: float) -> str:
    d = start + timedelta(seconds=t)
    return d.strftime("%Y-%m-%d %H:%M:%S,") + f"{d.microsecond // 1000:03d}"


class LegacyLogWriter:
    """Turns a ``SimResult`` (or engine + events) into legacy log lines."""

    def __init__(self, result, heartbeat_s: float = 60.0, skip_lines: bool = True, token_status: bool = True):
        self.result = result
        self.cfg = result.config
        self.heartbeat_s = heartbeat_s
        self.skip_lines = skip_lines
        self.token_status = token_status
        self.roles = {n: t.role for n, t in self.cfg.tasks.items()}
        self.worker = {n: f"ForkPoolWorker-{i + 1}" for i, n in enumerate(self.cfg.tasks)}
        self._rng = uuid.UUID(int=0x5EED)

    def _tid(self, name: str, n: int) -> str:
        return str(uuid.uuid5(self._rng, f"{name}-{n}"))

    def lines(self):
        cfg = self.cfg
        start = self.result.events.start
        rate, cap = cfg.refill_per_minute, cfg.capacity
        out: list[tuple[float, int, str]] = []
        seq = 0

        def put(t, level, proc, msg):
            nonlocal seq
            seq += 1
            out.append((t, seq, f"[{_ts(start, t)}: {level}/{proc}] {msg}"))

        last_t, last_b = 0.0, float(cfg.start_tokens)
        waiting: dict[str, list] = {}   # task -> [since, target, next heartbeat]
        run_no: dict[str, int] = {}
        run_started: dict[str, float] = {}
        rows = self.result.events.rows
        for t, ev, task, bal, target, cost, items, wait_s, detail in rows:
            # heartbeats for open waits, up to this event (the balance only refills in between)
            if waiting and self.heartbeat_s:
                for name, w in waiting.items():
                    since, tgt, h = w
                    while h < t or (h == t and ev != "heartbeat"):
                        b = min(cap, last_b + rate * (h - last_t) / 60.0) if h >= last_t else last_b
                        remaining = max(0.0, (tgt - b) * 60.0 / rate)
                        put(h, "INFO", self.worker[name],
                            f"[Heartbeat] Waiting for tokens... Current: {b:.2f}. Target: {tgt:g}. "
                            f"Remaining: {remaining:.0f}s")
                        h += self.heartbeat_s
                    w[2] = h
            if bal is not None:
                last_t, last_b = t, bal
            proc = self.worker.get(task, "MainProcess")
            role = self.roles.get(task)
            if ev == "run_start":
                n = run_no[task] = run_no.get(task, 0) + 1
                run_started[task] = t
                cname = CELERY_NAMES[role].format(name=task)
                put(t, "INFO", "MainProcess", f"Task {cname}[{self._tid(task, n)}] received")
                if role == "upserter":
                    put(t, "INFO", proc, f"--- Task: {task} started (Version: 2.1) ---")
                else:
                    put(t, "INFO", proc, f"--- Task: {task} started ---")
                if self.token_status:
                    put(t, "INFO", proc, f"Successfully retrieved token status: {{'tokensLeft': {int(bal)}, "
                                         f"'refillRate': {rate:g}, 'refillIn': 60000, 'tokenFlowReduction': 0.0}}")
            elif ev == "wait" and target < 1:  # Keepa's own rule: wait for a positive balance
                put(t, "WARNING", proc, f"Zero or negative tokens. Have: {bal:.2f}. Waiting for {wait_s:.0f} "
                                        f"seconds to ensure a positive balance.")
            elif ev == "wait":
                waiting[task] = [t, target, t + self.heartbeat_s]
                put(t, "WARNING", proc, f"Insufficient tokens (Current: {bal:.2f}, Target: {target:g}). "
                                        f"Waiting for {wait_s:.0f}s.")
            elif ev == "grant":
                if task in waiting:
                    del waiting[task]
                    put(t, "INFO", proc, f"Tokens recovered ({bal:.2f} >= {target:g}). Resuming.")
            elif ev == "abort":
                waiting.pop(task, None)
                put(t, "WARNING", proc, f"Insufficient tokens (Current: {bal:.2f}, Target: {target:g}). "
                                        f"Wait {wait_s:.0f}s > {self.cfg.tasks[task].max_wait or 60:g}s. Exiting task.")
            elif ev == "spend":
                if items:
                    put(t, "INFO", proc, f"Batch API call successful. Tokens consumed: {cost:g}. Tokens left: {bal:g}")
                else:
                    put(t, "INFO", proc, f"Fetched 150 deals. Tokens consumed: {cost:g}. Tokens left: {bal:g}")
            elif ev == "429":
                put(t, "ERROR", proc, f"429 ERROR. Keepa reported 0 tokens consumed for this failed call. "
                                      f"Tokens left: {bal:g}")
            elif ev == "found":
                put(t, "INFO", proc, f"Step 2 Complete: Found {items} new deals.")
            elif ev == "upsert":
                if role == "upserter":
                    put(t, "INFO", proc, f"Step 6 Complete: Successfully upserted/updated {items} rows.")
                else:
                    put(t, "INFO", proc, f"--- Backfill state saved. Page: {detail['page']}, "
                                         f"Chunk: {detail['offset']} ---")
            elif ev == "run_finish":
                waiting.pop(task, None)
                n = run_no.get(task, 0)
                cname = CELERY_NAMES[role].format(name=task)
                put(t, "INFO", proc, f"--- Task: {task} finished ---")
                put(t, "INFO", proc, f"Task {cname}[{self._tid(task, n)}] succeeded in "
                                     f"{t - run_started.get(task, t):.2f}s: None")
        # Ticks of a scheduled task that fall inside one of its runs are skipped, and say so.
        if self.skip_lines:
            for name, spec in cfg.tasks.items():
                if spec.schedule.continuous:
                    continue
                spans = []
                open_at = None
                for t, ev, task, *_ in rows:
                    if task != name:
                        continue
                    if ev == "run_start":
                        open_at = t
                    elif ev == "run_finish" and open_at is not None:
                        spans.append((open_at, t))
                        open_at = None
                if open_at is not None:
                    spans.append((open_at, self.result.end))
                for a, b in spans:
                    tick = spec.schedule.first_at_or_after(a + 1e-6)
                    while tick < b:
                        put(tick, "INFO", "ForkPoolWorker-9",
                            f"--- Task: {name} is already running. Skipping execution. ---")
                        tick = spec.schedule.first_at_or_after(tick + 1e-6)
        out.sort(key=lambda x: (x[0], x[1]))
        return [line for _, _, line in out]

    def write(self, path) -> int:
        lines = self.lines()
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return len(lines)


def write_legacy_log(result, path, **kw) -> int:
    """Write ``result`` (a SimResult) as a legacy Celery worker log; return the line count."""
    return LegacyLogWriter(result, **kw).write(path)
