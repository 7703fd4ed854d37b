"""Issue #2 goal: 30 simulated days of the seed workload in <= 0.1 s, >= 100x a per-second loop.

Both are timed best of several runs. The baseline is the same engine, bucket, policy and model, stepped once per
simulated second (VirtualClock(max_step=1)): the naive loop an event-driven
core replaces. Both run here, in this process, now.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from keepa_ops import simulate  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
HOURS = 30 * 24


def best_of(n, fn):
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    for name in ("seed_incident.yaml", "seed_incident_priority.yaml"):
        cfg = DATA / name
        fast, r = best_of(5, lambda c=cfg: simulate(c, HOURS))
        slow, n = best_of(3, lambda c=cfg: simulate(c, HOURS, max_step=1.0))
        gs = {k: v["grants"] for k, v in r.summary()["tasks"].items()}
        gn = {k: v["grants"] for k, v in n.summary()["tasks"].items()}
        print(f"{name}: 30 days event-driven {fast * 1000:.1f} ms ({len(r.events)} events, grants {gs}); "
              f"per-second loop {slow:.2f} s (grants {gn}); ratio {slow / fast:.0f}x; "
              f"goal <= 100 ms: {'met' if fast <= 0.1 else 'MISSED'}, >= 100x: {'met' if slow / fast >= 100 else 'MISSED'}")


if __name__ == "__main__":
    main()
