"""The Backfiller: pages through the deal history, 5 products at a time, resumable (``keepa_deals.backfiller``)."""
import logging

from keepa_ops.celery import GatedTask

from . import db, keepa_api, locks, token_manager
from .calls import GATED, tokens
from .celery_app import app

log = logging.getLogger(__name__)
BATCH = 5              # 5 x 20 = 100 tokens, + threshold 80 = target 180
THRESHOLD = 80
_pages: dict = {}      # the history pages this process has fetched


@app.task(bind=True, base=GatedTask, name="keepa_deals.backfiller.backfill_deals", keepa_priority=2)
def backfill_deals(self):
    with locks.one_run(self, "backfill_deals") as mine:
        if not mine:
            return
        log.info("--- Task: backfill_deals started ---")
        c = db.connect()
        page, chunk = int(db.get(c, "backfill_page", "0")), int(db.get(c, "backfill_chunk", "0"))
        if page or chunk:
            log.info("--- Resuming backfill from page %d, chunk %d ---", page, chunk)
        while True:
            cost = BATCH * keepa_api.COST_PER_ASIN
            if not GATED:
                token_manager.request_permission_for_call(cost, THRESHOLD)
            # one admission for the batch, and for its page when this process has not fetched it yet
            with tokens(self, cost + (0 if page in _pages else keepa_api.PAGE_COST)) as settle:
                if page not in _pages:
                    body = keepa_api.fetch_deals(page, history=True)
                    settle(body)
                    _pages[page] = body["deals"]["dr"]
                deals = _pages[page][chunk * BATCH:(chunk + 1) * BATCH]
                if not deals:
                    log.info("--- Task: backfill_deals finished ---")
                    return
                prod = keepa_api.fetch_products([d["asin"] for d in deals])
                settle(prod)
            prices = {p["asin"]: p["csv"][0][-1] for p in prod["products"]}
            chunk += 1
            if chunk * BATCH >= len(_pages[page]):
                page, chunk = page + 1, 0
            db.store(c, "backfill_deals", [(d["asin"], d["lastUpdate"], prices.get(d["asin"])) for d in deals],
                     prod["timestamp"] / 1000.0, {"backfill_page": page, "backfill_chunk": chunk})
            log.info("--- Backfill state saved. Page: %d, Chunk: %d ---", page, chunk)
