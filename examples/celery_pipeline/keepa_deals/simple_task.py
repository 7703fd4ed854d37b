"""The Upserter: new deals since the watermark, every minute (``keepa_deals.simple_task``)."""
import json
import logging
from datetime import datetime, timezone

from keepa_ops.celery import GatedTask

from . import clock, db, keepa_api, locks, token_manager
from .calls import GATED, tokens
from .celery_app import app

log = logging.getLogger(__name__)
VERSION = "2026-02-04"
MAX_ASINS_PER_BATCH = 10      # the seed's batch: 10 x 20 = 200 tokens, + threshold 50 = target 250
THRESHOLD = 50
KEEPA_EPOCH_UNIX = 1293840000  # 2011-01-01, Keepa minute 0


def iso(km: int) -> str:
    return datetime.fromtimestamp(KEEPA_EPOCH_UNIX + km * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.task(bind=True, base=GatedTask, name="keepa_deals.simple_task.update_recent_deals", keepa_priority=1)
def update_recent_deals(self):
    owner = self.request.id or "direct"
    with locks.one_run(self, "update_recent_deals", keepa_seconds=3600) as mine:
        if not mine:
            return
        log.info("--- Task: update_recent_deals started (Version: %s) ---", VERSION)
        c = db.connect()
        wm = db.get(c, "watermark")
        if wm is None:  # a new pipeline starts from now: the deals before it are the Backfiller's
            wm = int((clock.now() - KEEPA_EPOCH_UNIX) // 60)
            db.store(c, "update_recent_deals", [], clock.now(), {"watermark": wm})
        wm = int(wm)
        log.info("Loaded watermark: %s (Keepa time: %d)", iso(wm), wm)
        if not GATED:
            token_manager.request_permission_for_call(MAX_ASINS_PER_BATCH * keepa_api.COST_PER_ASIN, THRESHOLD)
        pending = json.loads(db.get(c, "upserter_pending", "{}"))
        if pending.get("run") == owner and self.request.retries:
            deals = pending["deals"]  # a retry of this run, which waited for its batch: the page is fetched
        else:
            with tokens(self, keepa_api.PAGE_COST) as settle:
                page = keepa_api.fetch_deals(0)
                settle(page)
            deals = [{"asin": d["asin"], "lastUpdate": d["lastUpdate"]} for d in page["deals"]["dr"]]
            db.store(c, "update_recent_deals", [], clock.now(),
                     {"upserter_pending": json.dumps({"run": owner, "deals": deals})})
        new = sorted((d for d in deals if d["lastUpdate"] > wm), key=lambda d: (d["lastUpdate"], d["asin"]))
        old = [d for d in deals if d["lastUpdate"] <= wm]
        if old:
            d = old[0]
            log.info("Stop Trigger: Deal %s (Update: %d) <= Watermark (%d). Diff: %d min.", d["asin"],
                     d["lastUpdate"], wm, wm - d["lastUpdate"])
        log.info("Step 2 Complete: Found %d new deals.", len(new))
        for i in range(0, len(new), MAX_ASINS_PER_BATCH):
            batch = new[i:i + MAX_ASINS_PER_BATCH]
            if not GATED and i:
                token_manager.request_permission_for_call(len(batch) * keepa_api.COST_PER_ASIN, THRESHOLD)
            with tokens(self, len(batch) * keepa_api.COST_PER_ASIN) as settle:
                body = keepa_api.fetch_products([d["asin"] for d in batch])
                settle(body)
            prices = {p["asin"]: p["csv"][0][-1] for p in body["products"]}
            wm = batch[-1]["lastUpdate"]
            n = db.store(c, "update_recent_deals", [(d["asin"], d["lastUpdate"], prices.get(d["asin"])) for d in batch],
                         body["timestamp"] / 1000.0, {"watermark": wm})
            log.info("Step 6 Complete: Successfully upserted/updated %d rows.", n)
            log.info("Successfully updated watermark to %s", iso(wm))
        log.info("--- Task: update_recent_deals finished ---")
