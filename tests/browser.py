"""A real headless Chromium for the report tests, with the network blocked.

The binary is ``chromium`` (Debian's, which ``.ci/run`` installs) or another Chrome on PATH.
With none, the browser tests are skipped, unless ``KEEPA_OPS_REQUIRE_BROWSER=1`` (as in
``.ci/run``): then they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM_OWN = re.compile(r"https?://([\w.-]+\.)?(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)\b")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    msg = "no Chromium: install Debian's chromium (.ci/run does)"
    if os.environ.get("KEEPA_OPS_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def render(page: Path, budget_ms: int = 8000) -> tuple[str, list[str], list[str]]:
    """(the DOM after the page's scripts ran, the console's messages, the URLs the page asked the
    network for). Every request that leaves the machine goes to a dead proxy."""
    with tempfile.TemporaryDirectory() as profile:
        net = Path(profile) / "net.json"
        r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--enable-unsafe-swiftshader",  # WebGL (plotly's scattergl) in software, as headless has no GPU
                            f"--user-data-dir={profile}", "--proxy-server=http://127.0.0.1:9",
                            "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}",
                            f"--log-net-log={net}", "--dump-dom", page.resolve().as_uri()],
                           capture_output=True, text=True, timeout=120)
        # the page's console; the GL driver's own performance notes about software WebGL are not the page's
        console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln and '"[.WebGL-' not in ln]
        urls = sorted({u for u in re.findall(r'"(https?://[^"\s]+)"', net.read_text() if net.exists() else "")
                       if not CHROMIUM_OWN.match(u)})
    return r.stdout, console, urls
