"""KeepaClient against the real fake server: envelopes, typed errors, bounded retries."""
import pytest
import requests

from keepa_ops.keepa.client import ApiKey, KeepaClient
from keepa_ops.errors import KeepaRequestRejected, KeepaUnavailable, NotEnoughTokens
from keepa_ops.live.fake_server import FakeKeepa

SECRET = "sekret-key-9f3a1c"


@pytest.fixture
def fake():
    f = FakeKeepa(refill_per_minute=5, start_tokens=300)
    f.serve()
    yield f
    f.shutdown()


def client(fake, **kw):
    faults = []
    c = KeepaClient(SECRET, fake.url, timeout=0.5, retries=3, backoff=0.01,
                    on_fault=lambda kind, msg, attempt: faults.append((kind, msg)), **kw)
    return c, faults


def inject(fake, kind, count, delay_s=1.0):
    requests.post(fake.url + "/__fake__/faults", json={"kind": kind, "count": count, "delay_s": delay_s})


def test_envelope_from_every_call(fake):
    seen = []
    c, _ = client(fake, on_envelope=seen.append)
    assert c.token_status().tokens_left == 300
    deals, env = c.deals({"page": 0, "domainId": 1, "priceTypes": [0]})
    assert len(deals) == 150 and env.consumed == 5 and env.tokens_left == 295
    products, env = c.products([d["asin"] for d in deals[:3]])
    assert len(products) == 3 and env.consumed == 3
    assert len(seen) == 3


def test_429_raises_with_the_envelope(fake):
    fake.buckets.clear()
    fake.start_tokens = 1
    c, _ = client(fake)
    c.products(["B000000001"] * 1, offers=100)       # 1 token left -> deep negative
    with pytest.raises(NotEnoughTokens) as e:
        c.deals({"page": 0, "domainId": 1, "priceTypes": [0]})
    env = e.value.envelope
    assert env.tokens_left < 0 and env.consumed == 0 and 0 < env.refill_in_ms <= 60000


@pytest.mark.parametrize("kind", ["500", "garbage", "drop", "slow"])
def test_transient_faults_are_retried_and_reported_once_each(fake, kind):
    c, faults = client(fake)
    inject(fake, kind, 2)
    assert c.token_status().tokens_left == 300
    assert len(faults) == 2
    assert all(SECRET not in m for _, m in faults)


def test_gives_up_with_a_typed_error_that_hides_the_key(fake):
    c, faults = client(fake)
    inject(fake, "500", 10)
    with pytest.raises(KeepaUnavailable) as e:
        c.token_status()
    assert "4 attempts" in str(e.value) and SECRET not in str(e.value)
    assert e.value.__cause__ is None and len(faults) == 4
    dead = KeepaClient(SECRET, "http://127.0.0.1:9", timeout=0.2, retries=1, backoff=0.01)
    with pytest.raises(KeepaUnavailable) as e:
        dead.token_status()
    assert SECRET not in str(e.value) and SECRET not in repr(e.value)


def test_rejections_are_not_retried(fake):
    fake.keys = {"the-right-key"}
    c, faults = client(fake)
    with pytest.raises(KeepaRequestRejected) as e:
        c.token_status()
    assert faults == [] and SECRET not in str(e.value)


def test_key_is_never_in_repr(monkeypatch, tmp_path):
    k = ApiKey(SECRET)
    assert SECRET not in repr(k) and SECRET not in str(k)
    monkeypatch.delenv("KEEPA_API_KEY", raising=False)
    f = tmp_path / "key"
    f.write_text(SECRET + "\n")
    assert ApiKey.from_env(str(f)).reveal() == SECRET
    assert ApiKey.from_env(None) is None
    monkeypatch.setenv("KEEPA_API_KEY", "from-env")
    assert ApiKey.from_env(str(f)).reveal() == "from-env"
