"""One contract, two implementations: the simulated Keepa and HTTP against the fake server answer
alike on the same deal stream; the memory store and the SQLite store mean the same by "stored"."""
import inspect

import pytest

from keepa_ops import load_config
from keepa_ops.core.clock import RealClock, VirtualClock
from keepa_ops.core.interfaces import Clock, Store, Transport
from keepa_ops.errors import NotEnoughTokens
from keepa_ops.keepa.client import KeepaClient
from keepa_ops.keepa.wire import DealRef
from keepa_ops.live.fake_server import FakeKeepa
from keepa_ops.live.store import DealStore
from keepa_ops.live.transport import HttpTransport
from keepa_ops.simulation.keepa import SimulatedKeepa
from keepa_ops.simulation.memory_store import MemoryStore

CFG = {"refill_per_minute": 5, "start_tokens": 40, "policy": "priority",
       "tasks": {"up": {"role": "upserter", "every": "10m"}, "bf": {"role": "backfiller"}},
       "workload": {"pending_new_deals": 200, "new_deals_per_hour": 30, "backlog": 400},
       "keepa": {"product_params": {"offers": 30, "buybox": 1}}}


class _Http:
    """HttpTransport on a fake whose clock stands still unless moved, like the virtual one."""

    def __init__(self, cfg):
        self.fake = FakeKeepa.from_config(cfg, speed=1e-9, start_unix=cfg.start.timestamp())
        self.fake.serve()
        self.client = KeepaClient("contract-key", self.fake.url, retries=0)
        self.transport = HttpTransport(self.client, cfg.keepa)

    def advance(self, seconds):
        self.fake._offset += seconds

    def close(self):
        self.client.close()
        self.fake.shutdown()


class _Sim:
    def __init__(self, cfg):
        self.clock = VirtualClock()
        self.transport = SimulatedKeepa(cfg, self.clock)

    def advance(self, seconds):
        self.clock.sleep_until(self.clock.now() + seconds)

    def close(self):
        pass


def _script(k):
    """The same calls, in the same order, at the same Keepa times; what each answered."""
    t = k.transport
    out = []
    for step in range(2):
        page = t.deal_page(0, False)
        out.append(("live", [tuple(d) for d in page.items], page.consumed, page.envelope.tokens_left))
        back = t.deal_page(step, True)
        out.append(("backlog", [tuple(d) for d in back.items][:5], len(back.items), back.consumed))
        prod = t.products([d.asin for d in page.items[:3]])
        out.append(("product", [r["asin"] for r in prod.items], prod.consumed, prod.envelope.tokens_left))
        k.advance(1800)
    t.products([d.asin for d in page.items[:60]])  # drives the balance below zero
    k.advance(0)
    refusals = 0
    for _ in range(3):
        try:
            t.products([page.items[0].asin])
        except NotEnoughTokens as e:
            refusals += 1
            out.append(("429", e.envelope.tokens_left <= 0, e.envelope.consumed))
    out.append(("refused", refusals))
    return out


def test_both_transports_answer_the_same_calls_alike():
    cfg = load_config(CFG)
    answers = []
    for make in (_Sim, _Http):
        k = make(cfg)
        try:
            answers.append(_script(k))
        finally:
            k.close()
    sim, live = answers
    assert sim == live
    assert sim[0][1] and sim[0][2] == 5  # a live page of deals, priced 5 by Keepa, not by the caller
    assert any(step[0] == "429" for step in sim)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = DealStore(tmp_path / "deals.sqlite")
        yield s
        s.close()


def test_both_stores_mean_the_same_by_stored(store):
    a1, a2, b = DealRef(100.0, "B0AAAAAAAA"), DealRef(101.0, "B0BBBBBBBB"), DealRef(-1.0, "B0CCCCCCCC")
    assert store.watermark("up") is None and store.checkpoint("bf") is None and not store.has(a1)
    store.commit_new("up", [], [a1, a2], a2, 1.0)
    store.commit_backfill("bf", [], [b], (0, 1), 2.0)
    assert tuple(store.watermark("up")) == tuple(a2) and tuple(store.checkpoint("bf")) == (0, 1)
    assert store.has(a1) and store.has(b)
    # the same ASIN updated later is stored once, and "stored" means with this lastUpdate
    newer = DealRef(130.0, a1.asin)
    assert not store.has(newer)
    store.commit_new("up", [], [newer], newer, 3.0)
    assert store.has(newer) and not store.has(a1)
    assert store.counts() == {"live": {"deals": 2, "writes": 3}, "backfill": {"deals": 1, "writes": 1}}


def _members(proto):
    return [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]


def _params(fn):
    return [(p.name, p.kind) for p in list(inspect.signature(fn).parameters.values())[1:]]


@pytest.mark.parametrize("proto, impls", [
    (Clock, [VirtualClock, RealClock]),
    (Transport, [SimulatedKeepa, HttpTransport]),
    (Store, [MemoryStore, DealStore]),
], ids=["Clock", "Transport", "Store"])
def test_every_implementation_takes_what_its_protocol_names(proto, impls):
    """Each method the Protocol names exists, with the Protocol's parameters first (extra ones need defaults)."""
    assert _members(proto), proto
    for impl in impls:
        for name in _members(proto):
            assert hasattr(impl, name), f"{impl.__name__} has no {name}"
            want, got = _params(getattr(proto, name)), _params(getattr(impl, name))
            assert got[:len(want)] == want, f"{impl.__name__}.{name}{got} does not take {want}"
            extra = list(inspect.signature(getattr(impl, name)).parameters.values())[1 + len(want):]
            assert all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                       for p in extra), f"{impl.__name__}.{name} needs more than {proto.__name__} gives"
