"""An embedded fake Keepa server on 127.0.0.1, faithful to Keepa's documented token rules.

It meters with ``keepa.meter.KeepaMeter`` and serves ``keepa.stream.DealStream``, the
same meter and stream the simulated Keepa uses, so a simulation and a live run against
this server see the same prices, refusals and deals.

Invariants:
* one meter per key, check-and-debit under one lock; refill first, then
  ``/token`` always answers and any other endpoint answers 429 (charged 0) while
  the balance is <= 0, else serves and debits Keepa's price, even below zero;
* every JSON body carries the whole envelope, ``tokensLeft`` an integer;
* the deal stream is a pure function of (seed, clock): deal i is published at a
  fixed time, so a watermark reader can be checked for "every deal exactly once";
* it binds to 127.0.0.1 only and never writes a key anywhere.

Test-only controls live under ``/__fake__/`` (state, faults, advance, report).
"""
from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from ..keepa.meter import DEAL_PAGE_COST, SELLER_COST, KeepaMeter, product_cost
from ..keepa.stream import BACKLOG_BASE, DealStream, asin_of, stable_hash
from ..keepa.wire import unix_to_keepa_minutes

FAULTS = ("429", "500", "slow", "drop", "garbage")


class FakeKeepa:
    """The server's state: clock, one meter per key, the deal stream, faults and what was charged."""

    def __init__(self, refill_per_minute: float = 5, start_tokens: float | None = None, *,
                 stepped: bool = False, speed: float = 1.0, seed: int = 7, deals_per_hour: float = 60,
                 pending: int = 300, backlog: int = 10_000, keys: list[str] | None = None,
                 start_unix: float | None = None, arrivals: tuple[float, ...] | None = None,
                 offers_per_product: int | None = None, capacity: float | None = None):
        self.lock = threading.RLock()
        self.rate = float(refill_per_minute)
        self.capacity = capacity
        self.start_tokens = 60 * self.rate if start_tokens is None else float(start_tokens)
        self.stepped = stepped
        self.speed = float(speed)
        self.seed = seed
        self.token_flow_reduction = 0.0
        self.keys = set(keys) if keys else None
        self.start_unix = float(start_unix if start_unix is not None else math.floor(time.time() / 60) * 60)
        self.stream = DealStream(start_unix=self.start_unix, pending=pending, per_hour=deals_per_hour,
                                 arrivals=arrivals, backlog=backlog, seed=seed, offers=offers_per_product)
        self._t0 = time.monotonic()
        self._offset = 0.0
        self.publish_until: float | None = None  # freeze the stream at this server time
        self.buckets: dict[str, KeepaMeter] = {}
        self._key_ids: dict[str, int] = {}
        self.faults: list[list] = []  # [kind, remaining, delay_s]
        self.stats = {"calls": {}, "charged": {}, "refused": 0, "injected": {k: 0 for k in FAULTS},
                      "backlog_pages": {}}
        self.httpd = None
        self.thread = None

    @classmethod
    def from_config(cls, cfg, speed: float = 1.0, **kw) -> "FakeKeepa":
        """The fake Keepa a config's workload describes (what ``simulate`` would talk to)."""
        w = cfg.workload
        return cls(cfg.refill_per_minute, cfg.start_tokens, stepped=cfg.stepped, speed=speed,
                   deals_per_hour=w.new_deals_per_hour, pending=w.pending_new_deals, backlog=w.backlog,
                   arrivals=w.arrivals, offers_per_product=w.offers_per_product, capacity=cfg.capacity, **kw)

    @property
    def pending(self) -> int:
        return self.stream.pending

    @property
    def backlog(self) -> int:
        return self.stream.backlog

    # -- clock --------------------------------------------------------------------
    def now(self) -> float:
        """Server time, unix seconds (runs ``speed`` times faster than the wall)."""
        return self.start_unix + (time.monotonic() - self._t0) * self.speed + self._offset

    def _elapsed(self) -> float:
        return self.now() - self.start_unix

    # -- deals --------------------------------------------------------------------
    def published_at(self, i: int) -> float:
        return self.stream.published_at(i)

    def _visible(self, now: float | None = None) -> float:
        """The server time the deal stream shows: ``now``, or the moment publishing was frozen."""
        now = self.now() if now is None else now
        return now if self.publish_until is None else min(now, self.publish_until)

    def published_count(self, now: float | None = None) -> int:
        return self.stream.published_count(self._visible(now))

    def deal(self, idx: int, published: float) -> dict:
        h = stable_hash(self.seed, idx)
        asin = asin_of(idx, self.seed)
        km = unix_to_keepa_minutes(published)
        price = 500 + h % 20000
        avg = price + 100 + (h >> 20) % 5000
        return {
            "asin": asin, "title": f"Deal product {asin}", "rootCat": 1000 + h % 30,
            "categories": [2000 + h % 300], "creationDate": km - 60 * 24, "lastUpdate": km,
            "current": [price, -1, -1, -1], "delta": [[price - avg]], "deltaPercent": [[round(100 * (price - avg) / avg)]],
            "avg": [[avg]], "deltaLast": [price - avg], "currentSince": [km], "image": f"{asin}.jpg",
            "minRating": -1,
        }

    def live_page(self, page: int) -> list[dict]:
        return [self.deal(i, self.stream.published_at(i)) for i in self.stream.live_page(page, self._visible())]

    def backlog_page(self, page: int) -> list[dict]:
        s = self.stream
        return [self.deal(BACKLOG_BASE + j, s.backlog_published_at(j)) for j in s.backlog_page(page)]

    def published_deals(self) -> list[tuple[str, int]]:
        """(asin, lastUpdate) of every live deal published so far."""
        s = self.stream
        return [(s.asin(i), s.last_update(i)) for i in range(self.published_count())]

    def backlog_asins(self) -> list[str]:
        return [self.stream.backlog_asin(j) for j in range(self.stream.backlog)]

    def offers_of(self, asin: str) -> int:
        return self.stream.offers_of(asin)

    def product(self, asin: str, domain: int) -> dict:
        h = stable_hash(self.seed, "p", asin)
        km = unix_to_keepa_minutes(self.now())
        price = 500 + h % 20000
        return {"asin": asin, "domainId": domain, "title": f"Product {asin}", "lastUpdate": km,
                "csv": [[km - 1440, price + 250, km, price], None], "offersCount": self.offers_of(asin)}

    def product_cost(self, asin: str, q: dict) -> int:
        return product_cost(q, self.offers_of(asin))

    # -- tokens -------------------------------------------------------------------
    def bucket(self, key: str) -> KeepaMeter:
        m = self.buckets.get(key)
        if m is None:
            m = KeepaMeter(self.rate, self.start_tokens, capacity=self.capacity, stepped=self.stepped,
                           now=self._elapsed(), token_flow_reduction=self.token_flow_reduction)
            self.buckets[key] = m
            self._key_ids[key] = len(self._key_ids) + 1
        return m

    def envelope(self, m: KeepaMeter, consumed: float, t0: float) -> dict:
        env = m.envelope(self._elapsed(), consumed, self.now() * 1000, time_scale=self.speed)
        return env.to_json((time.monotonic() - t0) * 1000)

    def take_fault(self):
        with self.lock:
            if not self.faults:
                return None
            f = self.faults[0]
            f[1] -= 1
            if f[1] <= 0:
                self.faults.pop(0)
            self.stats["injected"][f[0]] += 1
            return f[0], f[2]

    # -- serving ------------------------------------------------------------------
    def serve(self, port: int = 0) -> str:
        """Start serving in a daemon thread; return the base URL."""
        server = self

        class Handler(_Handler):
            fake = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-keepa", daemon=True)
        self.thread.start()
        return self.url

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def shutdown(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def report(self) -> dict:
        with self.lock:
            el = self._elapsed()
            return {
                "now_unix": self.now(), "now_keepa_minutes": unix_to_keepa_minutes(self.now()),
                "refill_per_minute": self.rate, "speed": self.speed,
                "tokens": {f"key#{self._key_ids[k]}": math.floor(b.balance(el)) for k, b in self.buckets.items()},
                "calls": dict(self.stats["calls"]), "refused": self.stats["refused"],
                "charged": {f"key#{self._key_ids[k]}": v for k, v in self.stats["charged"].items()},
                "injected": dict(self.stats["injected"]), "faults_pending": [list(f) for f in self.faults],
                "published_count": self.published_count(), "published": self.published_deals(),
                "backlog": self.backlog, "backlog_pages": dict(self.stats["backlog_pages"]),
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    fake: FakeKeepa = None
    server_version = "FakeKeepa/1"

    def log_message(self, fmt, *args):  # never log request lines: they carry the key
        pass

    def _send(self, status: int, body: dict | bytes):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): its loss
            self.close_connection = True

    def _error(self, status, etype, message, env=None):
        body = dict(env or {})
        body["error"] = {"type": etype, "message": message, "details": None}
        self._send(status, body)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method):
        t0 = time.monotonic()
        url = urlparse(self.path)
        path = url.path.rstrip("/") or "/"
        body = self._body()
        if path.startswith("/__fake__"):
            return self._control(method, path, body)
        fake = self.fake
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        endpoint = path.lstrip("/")
        if endpoint not in ("token", "deal", "product", "seller"):
            return self._error(404, "NOT_FOUND", f"unknown endpoint /{endpoint}")
        if method not in ("GET", "POST") or (method == "POST" and endpoint != "deal"):
            return self._error(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on /{endpoint}")
        key = q.get("key", "")
        if not key or (fake.keys is not None and key not in fake.keys):
            return self._error(400, "REQUEST_REJECTED", "invalid or missing API key")

        fault = fake.take_fault()
        if fault and fault[0] == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault and fault[0] == "slow":
            time.sleep(fault[1])

        with fake.lock:
            fake.stats["calls"][endpoint] = fake.stats["calls"].get(endpoint, 0) + 1
            b = fake.bucket(key)
            el = fake._elapsed()
            if fault and fault[0] in ("429", "500"):
                status = 429 if fault[0] == "429" else 500
                etype = "NOT_ENOUGH_TOKEN" if status == 429 else "INTERNAL_SERVER_ERROR"
                return self._error(status, etype, f"injected {fault[0]}", fake.envelope(b, 0, t0))
            if endpoint == "token":
                payload, env = {}, fake.envelope(b, 0, t0)
            else:
                payload, env = self._metered(endpoint, q, body, b, key, el, t0)
                if payload is None:
                    return
        if fault and fault[0] == "garbage":
            return self._send(200, b"\x00\xffnot json <html>" + bytes(range(32)))
        payload.update(env)
        self._send(200, payload)

    def _metered(self, endpoint, q, body, b, key, el, t0):
        """Refuse at balance <= 0, else serve and debit the full cost. Returns (payload, envelope)."""
        fake = self.fake
        if not b.admits(el):
            fake.stats["refused"] += 1
            self._error(429, "NOT_ENOUGH_TOKEN", "not enough tokens", fake.envelope(b, 0, t0))
            return None, None
        try:
            payload, cost = self._serve(endpoint, q, body)
        except ValueError as e:
            self._error(400, "REQUEST_REJECTED", str(e), fake.envelope(b, 0, t0))
            return None, None
        b.charge(cost, el)
        fake.stats["charged"][key] = fake.stats["charged"].get(key, 0) + cost
        return payload, fake.envelope(b, cost, t0)

    def _serve(self, endpoint, q, body):
        fake = self.fake
        if endpoint == "deal":
            raw = body.decode("utf-8", "replace") if body else q.get("selection")
            if not raw:
                raise ValueError("selection is required")
            try:
                sel = json.loads(raw)
            except json.JSONDecodeError:
                raise ValueError("selection is not valid JSON") from None
            if not isinstance(sel, dict):
                raise ValueError("selection must be a JSON object")
            if "domainId" not in sel:
                raise ValueError("selection.domainId is required")
            pt = sel.get("priceTypes")
            if isinstance(pt, int):
                pt = [pt]
            if not isinstance(pt, list) or len(pt) != 1 or not isinstance(pt[0], int):
                raise ValueError("selection.priceTypes must hold exactly one integer")
            dr = sel.get("dateRange", 0)
            if dr not in (0, 1, 2, 3):
                raise ValueError("selection.dateRange must be 0-3")
            st = sel.get("sortType", 1)
            if not isinstance(st, int) or abs(st) not in (1, 2, 3, 4) or st == -1:
                raise ValueError("selection.sortType must be 1-4 (negative inverts; not -1)")
            page = sel.get("page", 0)
            if not isinstance(page, int) or page < 0:
                raise ValueError("selection.page must be an integer >= 0")
            if dr == 0:
                dr_list = fake.live_page(page)
            else:
                fake.stats["backlog_pages"][page] = fake.stats["backlog_pages"].get(page, 0) + 1
                dr_list = fake.backlog_page(page)
            return {"deals": {"dr": dr_list, "categoryIds": [], "categoryNames": [], "categoryCount": []}}, DEAL_PAGE_COST
        if endpoint == "product":
            if "domain" not in q:
                raise ValueError("domain is required")
            asins = [a for a in q.get("asin", "").split(",") if a]
            if not asins or len(asins) > 100:
                raise ValueError("asin must list 1 to 100 ASINs")
            products = [fake.product(a, int(q["domain"])) for a in asins]
            return {"products": products}, sum(fake.product_cost(a, q) for a in asins)
        sellers = [s for s in q.get("seller", "").split(",") if s]
        if not sellers:
            raise ValueError("seller is required")
        return {"sellers": {s: {"sellerId": s, "sellerName": f"Seller {s}"} for s in sellers}}, SELLER_COST * len(sellers)

    def _control(self, method, path, body):
        fake = self.fake
        try:
            data = json.loads(body) if body else {}
        except json.JSONDecodeError:
            return self._send(400, {"error": "body is not JSON"})
        with fake.lock:
            if path == "/__fake__/report":
                return self._send(200, fake.report())
            if method != "POST":
                return self._send(405, {"error": "POST only"})
            if path == "/__fake__/state":
                if "refill_per_minute" in data or "token_flow_reduction" in data:
                    fake.rate = float(data.get("refill_per_minute", fake.rate))
                    fake.token_flow_reduction = float(data.get("token_flow_reduction", fake.token_flow_reduction))
                    for m in fake.buckets.values():
                        m.set_rate(fake.rate, fake.token_flow_reduction, fake._elapsed())
                if "tokens" in data:
                    fake.start_tokens = float(data["tokens"])
                    for m in fake.buckets.values():
                        m.bucket.sync(float(data["tokens"]), fake._elapsed())
                if "publish" in data:
                    fake.publish_until = None if data["publish"] else fake.now()
                return self._send(200, fake.report())
            if path == "/__fake__/faults":
                kind = str(data.get("kind"))
                if kind not in FAULTS:
                    return self._send(400, {"error": f"kind must be one of {FAULTS}"})
                fake.faults.append([kind, int(data.get("count", 1)), float(data.get("delay_s", 2.0))])
                return self._send(200, {"faults_pending": fake.faults})
            if path == "/__fake__/advance":
                fake._offset += float(data.get("seconds", 0))
                return self._send(200, {"now_unix": fake.now()})
        return self._send(404, {"error": "unknown control"})

