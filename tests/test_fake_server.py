"""The fake Keepa over real HTTP on loopback: metering and wire format per the spec."""
import json

import pytest
import requests

from keepa_ops.live.fake_server import FakeKeepa

ENVELOPE = {"timestamp", "tokensLeft", "refillIn", "refillRate", "tokenFlowReduction", "tokensConsumed",
            "processingTimeInMs"}


@pytest.fixture
def fake():
    f = FakeKeepa(refill_per_minute=5, start_tokens=24, pending=300, backlog=1000)
    f.serve()
    yield f
    f.shutdown()


def deal(s, url, key="k", **sel):
    sel = {"page": 0, "domainId": 1, "priceTypes": [0], **sel}
    return s.get(url + "/deal", params={"key": key, "selection": json.dumps(sel)})


def test_binds_loopback_only(fake):
    assert fake.httpd.server_address[0] == "127.0.0.1"


def test_metering_follows_keepa(fake):
    s = requests.Session()
    r = deal(s, fake.url)
    body = r.json()
    assert r.status_code == 200 and ENVELOPE <= set(body)
    assert body["tokensConsumed"] == 5 and body["tokensLeft"] == 19 and isinstance(body["tokensLeft"], int)
    assert len(body["deals"]["dr"]) == 150
    # a 30-product call at balance 19 is served and drives the balance negative
    asins = ",".join(d["asin"] for d in body["deals"]["dr"][:30])
    r = s.get(fake.url + "/product", params={"key": "k", "domain": 1, "asin": asins})
    assert r.status_code == 200 and r.json()["tokensLeft"] == -11 and len(r.json()["products"]) == 30
    assert all("csv" in p for p in r.json()["products"])
    # now everything that costs tokens is refused, charged nothing, with the envelope
    r = deal(s, fake.url)
    assert r.status_code == 429 and r.json()["tokensConsumed"] == 0 and ENVELOPE <= set(r.json())
    assert r.json()["error"]["type"] == "NOT_ENOUGH_TOKEN"
    # /token is free and answers at a negative balance
    r = s.get(fake.url + "/token", params={"key": "k"})
    assert r.status_code == 200 and r.json()["tokensLeft"] == -11
    assert fake.report()["refused"] == 1 and fake.report()["charged"] == {"key#1": 35}


def test_one_bucket_per_key_and_both_deal_paths(fake):
    s = requests.Session()
    assert deal(s, fake.url, key="a").json()["tokensLeft"] == 19
    assert s.get(fake.url + "/deal/", params={"key": "b", "selection": json.dumps(
        {"page": 0, "domainId": 1, "priceTypes": [0]})}).json()["tokensLeft"] == 19
    r = s.post(fake.url + "/deal", params={"key": "a"}, data=json.dumps({"page": 0, "domainId": 1, "priceTypes": [0]}))
    assert r.status_code == 200 and r.json()["tokensLeft"] == 14


@pytest.mark.parametrize("sel,status", [({"priceTypes": [0, 1]}, 400), ({"domainId": None}, 200),
                                        ({"sortType": -1}, 400), ({"dateRange": 7}, 400)])
def test_selection_is_validated(fake, sel, status):
    s = requests.Session()
    sel = {"page": 0, "domainId": 1, "priceTypes": [0], **sel}
    if sel["domainId"] is None:
        sel.pop("domainId")
        status = 400
    r = s.get(fake.url + "/deal", params={"key": "k", "selection": json.dumps(sel)})
    assert r.status_code == status
    assert ENVELOPE <= set(r.json())


def test_errors_and_methods(fake):
    s = requests.Session()
    assert s.get(fake.url + "/token").status_code == 400          # no key
    assert s.put(fake.url + "/token", params={"key": "k"}).status_code == 405
    assert s.get(fake.url + "/deal", params={"key": "k", "selection": "{nope"}).status_code == 400


def test_deal_stream_is_deterministic_and_advances(fake):
    other = FakeKeepa(refill_per_minute=5, start_tokens=300, pending=300, start_unix=fake.start_unix)
    assert [d["asin"] for d in fake.backlog_page(2)] == [d["asin"] for d in other.backlog_page(2)]
    n0 = fake.published_count()
    fake._offset += 3600  # one hour later: 60 more deals at the default 60/hour
    assert fake.published_count() == n0 + 60
    page = fake.live_page(0)
    lus = [d["lastUpdate"] for d in page]
    assert sorted(lus, reverse=True) != lus, "newest-first pages are not strictly sorted"
    assert max(lus) == page[0]["lastUpdate"] or max(lus) == page[1]["lastUpdate"]


def test_controls_set_state_inject_faults_and_report(fake):
    s = requests.Session()
    key = "a-distinctive-key-123"
    deal(s, fake.url, key=key)
    s.post(fake.url + "/__fake__/state", json={"tokens": 1000, "refill_per_minute": 20})
    s.post(fake.url + "/__fake__/faults", json={"kind": "500", "count": 2})
    assert deal(s, fake.url, key=key).status_code == 500
    assert deal(s, fake.url, key=key).status_code == 500
    r = deal(s, fake.url, key=key)
    assert r.status_code == 200 and r.json()["refillRate"] == 20
    rep = s.get(fake.url + "/__fake__/report").json()
    assert rep["injected"]["500"] == 2 and rep["published_count"] == 300
    assert key not in json.dumps(rep)


def test_cli_serves_on_loopback_and_stops_on_sigterm():
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    p = subprocess.Popen([sys.executable, "-m", "keepa_ops.cli", "fake-keepa", "--refill-per-minute", "20",
                          "--start-tokens", "7"], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        url = p.stdout.readline().split()[4]
        assert url.startswith("http://127.0.0.1:")
        body = requests.get(url + "/token", params={"key": "k"}, timeout=5).json()
        assert body["tokensLeft"] == 7 and body["refillRate"] == 20
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0


def test_keepa_time_is_minutes_since_2011():
    from datetime import datetime, timezone

    from keepa_ops.keepa.wire import keepa_minutes_to_unix, unix_to_keepa_minutes

    assert keepa_minutes_to_unix(0) == datetime(2011, 1, 1, tzinfo=timezone.utc).timestamp()
    t = datetime(2026, 2, 4, 10, 15, tzinfo=timezone.utc).timestamp()
    assert keepa_minutes_to_unix(unix_to_keepa_minutes(t)) == t
    fake = FakeKeepa(start_unix=t)
    assert fake.deal(fake.pending, fake.published_at(fake.pending))["lastUpdate"] == unix_to_keepa_minutes(t + 60)
