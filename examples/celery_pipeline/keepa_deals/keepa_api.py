"""Keepa calls, with the legacy pipeline's log lines (``keepa_deals.keepa_api``)."""
import json
import logging
import os

import requests

log = logging.getLogger(__name__)
BASE = os.environ.get("KEEPA_DEALS_KEEPA_URL", "https://api.keepa.com")
_session = None

PAGE_COST = 5          # Keepa's price of one /deal page
COST_PER_ASIN = 20     # offers=30 and the buy box, for a product with 30 offers
PRODUCT_PARAMS = {"offers": 30, "buybox": 1}


class TokensExhausted(Exception):
    """Keepa answered 429; ``body`` still tells the balance."""

    def __init__(self, body):
        super().__init__("429")
        self.body = body


def _get(endpoint: str, params: dict) -> dict:
    global _session
    if _session is None:
        _session = requests.Session()
    r = _session.get(f"{BASE}/{endpoint}", params=dict(params, key=os.environ["KEEPA_API_KEY"]), timeout=10)
    body = r.json()
    if r.status_code == 429:
        log.warning("429 ERROR. Keepa reported %s tokens consumed for this failed call. Tokens left: %s",
                    body.get("tokensConsumed", 0), body.get("tokensLeft"))
        raise TokensExhausted(body)
    r.raise_for_status()
    return body


def token_status() -> dict:
    body = _get("token", {})
    log.info("Successfully retrieved token status: %s",
             {k: body.get(k) for k in ("tokensLeft", "refillIn", "refillRate", "timestamp")})
    return body


def fetch_deals(page: int, history: bool = False) -> dict:
    selection = {"domainId": 1, "priceTypes": [0], "dateRange": 1 if history else 0, "sortType": 4, "page": page}
    body = _get("deal", {"selection": json.dumps(selection)})
    log.info("Fetched %d deals. Tokens consumed: %s. Tokens left: %s", len(body["deals"]["dr"]),
             body.get("tokensConsumed"), body.get("tokensLeft"))
    return body


def fetch_products(asins: list) -> dict:
    body = _get("product", dict(PRODUCT_PARAMS, domain=1, asin=",".join(asins)))
    log.info("Batch API call successful. Tokens consumed: %s. Tokens left: %s", body.get("tokensConsumed"),
             body.get("tokensLeft"))
    return body
