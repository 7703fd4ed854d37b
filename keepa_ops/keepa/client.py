"""A Keepa API client on ``requests.Session``.

Invariants:
* every response (errors and 429s included) yields an ``Envelope``, and
  ``on_envelope`` sees it before anything else happens;
* a 429 raises ``NotEnoughTokens`` at once, carrying the envelope (the engine syncs
  from it and waits again); timeouts, 5xx, dropped connections
  and non-JSON bodies are retried ``retries`` times with exponential backoff, each
  reported once to ``on_fault``, then raise ``KeepaUnavailable``;
* the key never appears in an exception message, a log line or a logged URL:
  every text that leaves this module goes through ``redact``.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import requests

from ..errors import KeepaOpsError, KeepaRequestRejected, KeepaUnavailable, NotEnoughTokens
from .wire import Envelope

DEFAULT_URL = "https://api.keepa.com"


class ApiKey:
    """The key, kept out of reprs, logs and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        value = (value or "").strip()
        if not value:
            raise KeepaOpsError("the Keepa API key is empty. Fix: set KEEPA_API_KEY or point keepa.key_file at a file.")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self):
        return "ApiKey(***)"

    __str__ = __repr__

    @classmethod
    def from_env(cls, key_file: str | None = None, env: str = "KEEPA_API_KEY") -> "ApiKey | None":
        if os.environ.get(env):
            return cls(os.environ[env])
        if key_file:
            p = Path(key_file).expanduser()
            if not p.exists():
                raise KeepaOpsError(f"key_file {p} does not exist. Fix: create it or set KEEPA_API_KEY.")
            return cls(p.read_text())
        return None


_KEY_PARAM = re.compile(r"((?:^|[?&;\s\"'])key=)[^&\s\"'<>]*", re.IGNORECASE)


def _spellings(key: str) -> list[str]:
    quoted = [quote(key, safe=""), quote(key, safe="/"), quote_plus(key), quote_plus(key, safe="/")]
    out = {key}
    for q in quoted:
        out |= {q, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), q)}
    return sorted(out, key=len, reverse=True)  # the longest first: a raw key inside an encoded one goes too


class KeepaClient:
    def __init__(self, key: ApiKey | str, base_url: str = DEFAULT_URL, *, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.5, sleep=time.sleep, on_envelope=None,
                 on_fault=None, session: requests.Session | None = None):
        self.key = key if isinstance(key, ApiKey) else ApiKey(key)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.on_envelope = on_envelope
        self.on_fault = on_fault
        self.session = session or requests.Session()
        self.session.headers.setdefault("Accept-Encoding", "gzip")
        if self.session.trust_env:
            # requests re-reads the whole environment on every call (proxies, CA bundle);
            # read it once here instead: that is half the cost of a call on loopback.
            self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                self.session.verify = bundle
            self.session.trust_env = False

    def redact(self, text: str) -> str:
        """``text`` without the key, in every spelling a request could carry it: raw, percent-encoded
        (``quote``, either case of hex), form-encoded (``quote_plus``), and any ``key=`` query value."""
        out = str(text)
        for spelling in _spellings(self.key.reveal()):
            out = out.replace(spelling, "***")
        return _KEY_PARAM.sub(r"\1***", out)

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- endpoints ------------------------------------------------------------------
    def token_status(self) -> Envelope:
        return self._request("GET", "token", {})[1]

    def deals(self, selection: dict) -> tuple[list[dict], Envelope]:
        body, env = self._request("GET", "deal", {"selection": json.dumps(selection, separators=(",", ":"))})
        deals = body.get("deals") or {}
        return list(deals.get("dr") or []), env

    def products(self, asins: list[str], domain: int = 1, **params) -> tuple[list[dict], Envelope]:
        if not 1 <= len(asins) <= 100:
            raise KeepaRequestRejected(f"a product call takes 1 to 100 ASINs, got {len(asins)}")
        q = {"domain": domain, "asin": ",".join(asins)}
        q.update({k: v for k, v in params.items() if v is not None})
        body, env = self._request("GET", "product", q)
        return list(body.get("products") or []), env

    # -- transport ------------------------------------------------------------------
    def _fault(self, kind: str, detail: str, attempt: int):
        if self.on_fault:
            self.on_fault(kind, self.redact(detail), attempt)

    def _request(self, method: str, endpoint: str, params: dict) -> tuple[dict, Envelope]:
        url = f"{self.base_url}/{endpoint}"
        params = dict(params, key=self.key.reveal())
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                r = self.session.request(method, url, params=params, timeout=self.timeout)
            except requests.Timeout:
                last = f"/{endpoint} timed out after {self.timeout:g}s"
                self._fault("timeout", last, attempt)
                continue
            except requests.RequestException as e:
                last = f"/{endpoint} connection failed ({type(e).__name__})"
                self._fault("connection", last, attempt)
                continue
            try:
                body = r.json()
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                env = Envelope.from_json(body)
            except (ValueError, KeyError, TypeError):
                if r.status_code in (400, 402, 405):
                    raise KeepaRequestRejected(f"/{endpoint} answered HTTP {r.status_code}") from None
                last = f"/{endpoint} answered HTTP {r.status_code} with a body that is not a Keepa envelope"
                self._fault("garbage" if r.status_code < 500 else "http_5xx", last, attempt)
                continue
            if self.on_envelope:
                self.on_envelope(env)
            if r.status_code == 200:
                return body, env
            err = body.get("error") or {}
            message = self.redact(f"/{endpoint} answered HTTP {r.status_code} {err.get('type', '')}: "
                                  f"{err.get('message', '')}".rstrip(": "))
            if r.status_code == 429:
                raise NotEnoughTokens(env)
            if r.status_code >= 500:
                last = message
                self._fault("http_5xx", message, attempt)
                continue
            raise KeepaRequestRejected(message)
        raise KeepaUnavailable(self.redact(f"{last}; gave up after {self.retries + 1} attempts"))

