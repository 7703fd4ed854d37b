"""The Celery app: a Redis broker, Beat sending both tasks every (Keepa) minute.

``KEEPA_DEALS_MODE=legacy`` (default): the tasks ask the seed's threshold TokenManager.
``KEEPA_DEALS_MODE=gated``: their Keepa calls go through keepa-ops' gate in Redis under the
``priority`` policy of ``keepa.yaml``.
"""
import os
from pathlib import Path

from celery import Celery

from . import clock

clock.install_log_clock()

GATED = os.environ.get("KEEPA_DEALS_MODE", "legacy") == "gated"

app = Celery("keepa_deals", broker=os.environ.get("KEEPA_DEALS_BROKER", "redis://127.0.0.1:6379/0"),
             include=["keepa_deals.simple_task", "keepa_deals.backfiller"])
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "update-recent-deals": {"task": "keepa_deals.simple_task.update_recent_deals", "schedule": clock.real(60)},
        "backfill-deals": {"task": "keepa_deals.backfiller.backfill_deals", "schedule": clock.real(60)},
    },
)
if GATED:
    app.conf.keepa_ops = {
        "bucket": os.environ.get("KEEPA_DEALS_REDIS", "redis://127.0.0.1:6379/1"),
        "config": os.environ.get("KEEPA_DEALS_GATE_CONFIG", str(Path(__file__).parent.parent / "keepa.yaml")),
        "scale": clock.SPEED,
        "max_hold": clock.real(float(os.environ.get("KEEPA_DEALS_MAX_HOLD", "120"))),
    }
