"""Issue #5 goal: 1,000 configs x 7 simulated days in <= 60 s on this 2-core machine.

Prints configs per second on all cores and, as the baseline from the same run, on one.
"""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from keepa_ops.planning.sweep import sweep  # noqa: E402

UP, BF = "tasks.update_recent_deals", "tasks.backfill_deals"
GRID = {  # 5 x 5 x 4 x 2 x 5 = 1,000 points, every target within the bucket
    f"{UP}.batch_size": [1, 2, 5, 8, 10],
    f"{UP}.threshold": [0, 25, 50, 75, 100],
    f"{UP}.every": ["60s", "5m", "15m", "1h"],
    "policy": ["threshold", "priority"],
    f"{BF}.batch_size": [2, 4, 5, 8, 10],
}


def main():
    base = ROOT / "data" / "seed_incident.yaml"
    cores = os.cpu_count() or 1
    t = time.perf_counter()
    df = sweep(base, GRID, hours=168, workers=cores, progress=None)
    dt = time.perf_counter() - t
    sample = {k: v[:2] for k, v in GRID.items()}
    n1 = 1
    for v in sample.values():
        n1 *= len(v)
    t = time.perf_counter()
    sweep(base, sample, hours=168, workers=1, progress=None)
    one = n1 / (time.perf_counter() - t)
    print(f"{len(df)} configs x 7 days on {cores} cores: {dt:.1f} s = {len(df) / dt:.1f} configs/s "
          f"({int(df['starved'].sum())} starve, {int(df['pareto'].sum())} on the Pareto front); "
          f"one core: {one:.1f} configs/s; goal <= 60 s: {'met' if dt <= 60 else 'MISSED'}")


if __name__ == "__main__":
    main()
