"""The live transport: the engine's Keepa calls over HTTP through ``KeepaClient``.

Invariant: it answers exactly what ``simulation.keepa.SimulatedKeepa`` answers (DealRef
pages, product rows, Keepa's charge, the envelope), so task code cannot tell simulation
from production; the transport contract tests check it on the same deal stream.
"""
from __future__ import annotations

import time

from ..keepa.client import KeepaClient
from ..config import KeepaSettings
from ..keepa.wire import DealRef, Response


class HttpTransport:
    def __init__(self, client: KeepaClient, settings: KeepaSettings, speed: float = 1.0):
        self.client = client
        self.settings = settings
        self.speed = speed
        self._deals: dict[str, dict] = {}   # deal objects seen on pages, until their products are fetched
        self._server_ms = None
        self._seen_at = 0.0

    def _saw(self, env):
        if env.timestamp_ms:
            self._server_ms = env.timestamp_ms
            self._seen_at = time.monotonic()

    def server_now(self) -> float:
        """Best estimate of the server's clock, unix seconds."""
        if self._server_ms is None:
            return time.time()
        return self._server_ms / 1000.0 + (time.monotonic() - self._seen_at) * self.speed

    def deal_page(self, page: int, backlog: bool) -> Response:
        sel = {"page": page, "domainId": self.settings.domain, "priceTypes": [self.settings.price_type],
               "dateRange": 3 if backlog else 0, "sortType": 1}
        deals, env = self.client.deals(sel)
        self._saw(env)
        refs = []
        for d in deals:
            if isinstance(d, dict) and d.get("asin") and d.get("lastUpdate") is not None:
                self._deals[d["asin"]] = d
                refs.append(DealRef(float(d["lastUpdate"]), str(d["asin"])))
        while len(self._deals) > 20 * 150:  # deals whose products are never fetched: forget the oldest
            self._deals.pop(next(iter(self._deals)))
        return Response(refs, env.consumed, env)

    def products(self, asins: list[str], params: dict | None = None) -> Response:
        params = self.settings.product_params if params is None else params
        products, env = self.client.products(asins, self.settings.domain, **params)
        self._saw(env)
        rows = []
        for p in products:
            deal = self._deals.pop(p.get("asin"), None) or {}
            current = deal.get("current") or [-1]
            rows.append({"asin": p.get("asin"), "title": p.get("title") or deal.get("title"),
                         "lastUpdate": p.get("lastUpdate"), "price": current[0] if current else -1})
        return Response(rows, env.consumed, env)
