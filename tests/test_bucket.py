import math

import pytest

from keepa_ops.keepa.bucket import TokenBucket
from keepa_ops.keepa.meter import KeepaMeter


@pytest.mark.parametrize("target,seconds", [(250, 2712), (180, 1872), (150, 1512)])
def test_seed_arithmetic(target, seconds):
    b = TokenBucket(5, 24)
    assert b.time_until(target, 0.0) == pytest.approx(seconds)
    assert b.balance(seconds) == pytest.approx(target)


def test_capacity_is_an_hour_of_refill_and_above_it_is_never():
    b = TokenBucket(5, 0)
    assert b.capacity == 300
    assert b.time_until(300, 0) == pytest.approx(3600)
    assert math.isinf(b.time_until(301, 0))


def test_spend_admitted_while_positive_may_go_negative():
    m = KeepaMeter(5, 300)
    assert m.admits(0)
    m.charge(400, 0)
    assert m.balance(0) == -100
    assert not m.admits(0) and m.refused == 1
    # continuous refill out of the deficit: 100 tokens take 20 minutes
    assert m.bucket.time_until(0.001, 0) == pytest.approx(1200.012)
    assert m.admits(1200.1) and m.envelope(1200.1, 0, 0).tokens_left == 0  # Keepa reports the floor


def test_waste_at_cap_is_counted():
    b = TokenBucket(5, 290)
    b.advance(600)  # 50 tokens of inflow, 10 fit
    assert b.balance(600) == 300
    assert b.refilled == pytest.approx(50)
    assert b.wasted == pytest.approx(40)


def test_stepped_refill_moves_once_a_minute():
    b = TokenBucket(5, 0, stepped=True)
    assert b.balance(59.9) == 0
    assert b.balance(60) == 5
    assert b.time_until(12, 60) == 180  # two more steps: 120 -> 10, 180 -> 15
    assert b.time_until(5, 60) == 60


def test_sync_replaces_estimate_and_rate():
    b = TokenBucket(5, 100)
    old = b.sync(-40, 0, refill_per_minute=20)
    assert old == 100
    assert b.balance(0) == -40
    assert b.rate == 20 and b.capacity == 1200
    assert b.time_until(20, 0) == pytest.approx(180)


def test_stepped_sync_takes_phase_from_refill_in():
    b = TokenBucket(5, 0, stepped=True)
    b.sync(0, 10, refill_in_ms=15000)  # next refill at t = 25
    assert b.balance(24.9) == 0
    assert b.balance(25) == 5


def test_token_flow_reduction_lowers_the_refill_and_keeps_the_cap():
    b = TokenBucket(5, 0)
    b.sync(0, 0, refill_per_minute=5, token_flow_reduction=2)
    assert b.rate == 3 and b.capacity == 300
    assert b.balance(600) == pytest.approx(30)  # 10 minutes at 5 - 2 per minute
    m = KeepaMeter(5, 0, token_flow_reduction=2)
    env = m.envelope(600, 0, 0)
    assert env.tokens_left == 30 and env.refill_rate == 5 and env.token_flow_reduction == 2
