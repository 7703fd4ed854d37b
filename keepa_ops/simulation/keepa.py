"""The simulated Keepa: Keepa's meter and deal stream, called in-process on the virtual clock.

It is a Transport like ``live.transport.HttpTransport`` and answers what the fake server
answers over HTTP, from the same ``keepa.meter.KeepaMeter`` and ``keepa.stream.DealStream``:
the same deals on the same pages, the same price for each call, a 429 at the same
balance, an envelope after every call. It keeps its own bucket: the engine keeps only
its estimate and syncs it from the envelopes, exactly as live, so a config whose costs
are wrong shows the same corrections in simulation as in production.

Invariant: a simulation is deterministic; Keepa's clock is ``start_unix + clock.now()``.
"""
from __future__ import annotations

from ..errors import NotEnoughTokens
from ..keepa.meter import DEAL_PAGE_COST, KeepaMeter, product_cost
from ..keepa.stream import DealStream
from ..keepa.wire import DealRef, Response, unix_to_keepa_minutes


class SimulatedKeepa:
    """Serves ``deal_page`` and ``products`` from one meter and one deal stream."""

    def __init__(self, config, clock, seed: int = 7):
        self.clock = clock
        self.start_unix = config.start.timestamp()
        self.stream = DealStream.from_workload(config.workload, self.start_unix, seed)
        self.meter = KeepaMeter(config.refill_per_minute, config.start_tokens, capacity=config.capacity,
                                stepped=config.stepped, now=clock.now())
        self.params = dict(config.keepa.product_params)
        self.calls = {"deal": 0, "product": 0}
        self._live_refs: list[DealRef] = []  # live deal i -> its DealRef (a pure function), built once
        self._pages: dict[tuple, tuple] = {}  # (kind, page) -> (its full key, its DealRefs): the last one built
        self._prices: dict[tuple, dict[int, float]] = {}  # product params -> {offers: price of one product}

    def server_now(self) -> float:
        return self.start_unix + self.clock.now()

    def _admit(self, now: float) -> None:
        if not self.meter.admits(now):
            raise NotEnoughTokens(self.meter.envelope(now, 0, (self.start_unix + now) * 1000))

    def _charged(self, items, cost: float, now: float) -> Response:
        self.meter.charge(cost, now)
        return Response(items, float(cost), self.meter.envelope(now, cost, (self.start_unix + now) * 1000))

    def deal_page(self, page: int, backlog: bool) -> Response:
        now = self.clock.now()
        self._admit(now)
        self.calls["deal"] += 1
        s = self.stream
        # A page is a pure function of its page number and, for the live list, of the window
        # it is cut from; the last page built for each number is kept while that key holds.
        key = ("backlog", page) if backlog else ("live", page, *s.live_window(self.start_unix + now))
        kept = self._pages.get(key[:2])
        if kept is not None and kept[0] == key:
            refs = kept[1]
        else:
            if backlog:
                refs = tuple(DealRef(float(s.backlog_last_update(j)), s.backlog_asin(j)) for j in s.backlog_page(page))
            else:
                live = self._live_refs
                for i in range(len(live), key[2]):
                    live.append(DealRef(float(s.last_update(i)), s.asin(i)))
                refs = tuple([live[i] for i in s.window_page(page, key[2], key[3])])
            self._pages[key[:2]] = (key, refs)
        return self._charged(list(refs), DEAL_PAGE_COST, now)

    def products(self, asins: list[str], params: dict | None = None) -> Response:
        now = self.clock.now()
        self._admit(now)
        self.calls["product"] += 1
        params = self.params if params is None else params
        offers_of = self.stream.offers_of
        prices = self._prices.get(pkey := tuple(sorted(params.items())))
        if prices is None:
            prices = self._prices[pkey] = {}
        cost = 0.0
        for a in asins:
            n = offers_of(a)
            price = prices.get(n)
            if price is None:
                price = prices[n] = product_cost(params, n)
            cost += price
        km = unix_to_keepa_minutes(self.start_unix + now)
        rows = [{"asin": a, "title": None, "lastUpdate": km, "price": -1} for a in asins]
        return self._charged(rows, cost, now)
