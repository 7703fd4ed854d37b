"""Issue #3 goal: >= 1,000 client requests/s against the fake Keepa over keep-alive.

The fake runs as its own process (``keepa-ops fake-keepa``), as it would beside a
runner. Baseline, same run: the naive loop, a fresh connection per request
(``requests.get``). Tokens are unlimited (a bucket far larger than the run can spend).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from keepa_ops.keepa.client import KeepaClient  # noqa: E402

N = 3000


def main():
    proc = subprocess.Popen([sys.executable, "-m", "keepa_ops.cli", "fake-keepa", "--refill-per-minute", "10000000"],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    url = proc.stdout.readline().split()[4]
    try:
        c = KeepaClient("bench-key", url)
        c.token_status()
        t = time.perf_counter()
        for i in range(N):
            c.products([f"B0{i:08d}"])
        ka = N / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(N // 3):
            requests.get(url + "/product", params={"key": "bench-key", "domain": 1, "asin": f"B0{i:08d}"}).json()
        naive = (N // 3) / (time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait()
    print(f"KeepaClient over keep-alive: {ka:,.0f} requests/s; naive new connection per request: {naive:,.0f} "
          f"requests/s; ratio {ka / naive:.1f}x (goal >= 1,000/s: {'met' if ka >= 1000 else 'MISSED'})")


if __name__ == "__main__":
    main()
