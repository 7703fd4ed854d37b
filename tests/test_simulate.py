import json

import pytest

from keepa_ops import simulate
from keepa_ops.cli import main
from tests.conftest import DATA


# At t = 0 Keepa charges four /deal pages (the Upserter's three over 300 pending deals, the
# Backfiller's first) that the legacy config believes free: 24 - 4 x 5 = 4 tokens are left.
AFTER_PAGES = 24 - 4 * 5


def test_incident_before_fix_starves_the_upserter():
    s = simulate(DATA / "seed_incident.yaml", hours=24).summary()
    # the Backfiller's target 180, from 4 tokens at 5/min
    assert s["tasks"]["backfill_deals"]["first_grant_s"] == pytest.approx((180 - AFTER_PAGES) / 5 * 60)
    up = s["tasks"]["update_recent_deals"]
    assert up["first_grant_s"] is None and up["grants"] == 0 and up["starved"]
    assert s["starved"] == ["update_recent_deals"]


def test_incident_after_fix_serves_the_upserter_first():
    s = simulate(DATA / "seed_incident_fixed.yaml", hours=24).summary()
    assert s["tasks"]["update_recent_deals"]["first_grant_s"] == pytest.approx((150 - AFTER_PAGES) / 5 * 60)
    # ... and the fix only moved the starvation: the Backfiller never gets a turn.
    assert s["starved"] == ["backfill_deals"]


def test_a_wrong_page_cost_shows_keepas_corrections_in_simulation(seed_raw):
    """page_cost 0 is the legacy belief; Keepa charges 5 a page and every envelope corrects the estimate."""
    wrong = simulate(seed_raw, hours=24).summary()["keepa"]
    assert wrong["calls"]["deal"] >= 4 and wrong["corrections"] >= wrong["calls"]["deal"]
    for t in seed_raw["tasks"].values():
        t["page_cost"] = 5
    right = simulate(seed_raw, hours=24).summary()["keepa"]
    assert right["corrections"] == 0

def test_prefix_config_under_priority_starves_nobody_for_a_week():
    r = simulate(DATA / "seed_incident_priority.yaml", hours=168)
    s = r.summary()
    assert s["starved"] == []
    for t in s["tasks"].values():
        assert t["grants"] > 0 and t["max_no_progress_s"] <= 3600 + 1e-3
    last_day = r.freshness(since=r.end - 86400)
    assert last_day["deals"] >= 140
    assert last_day["max_s"] <= 3600


def test_every_deal_stored_exactly_once_and_watermark_never_ahead(seed_raw):
    # a plan on which the Upserter keeps up: /deal lists only the last 12 hours, so a run that
    # falls 12 hours behind loses deals for good (as with Keepa), and this test is about the rest
    seed_raw.update(policy="priority", refill_per_minute=20, start_tokens=300)
    for task in seed_raw["tasks"].values():
        task["page_cost"] = 5
    r = simulate(seed_raw, hours=72)
    assert r.store.writes and set(r.store.writes.values()) == {1}
    wm = r.store.watermark("update_recent_deals")
    stream = r.transport.stream
    published = [(stream.last_update(i), stream.asin(i)) for i in range(stream.published_count(stream.start_unix + r.end))]
    live = {a for a, src in r.store.source.items() if src == "live"}
    # everything up to the watermark, nothing past it
    assert live == {a for lu, a in published if (lu, a) <= tuple(wm)}
    assert len(live) > 300


def test_simulation_is_deterministic(seed_raw):
    a = simulate(seed_raw, hours=48).events.rows
    b = simulate(seed_raw, hours=48).events.rows
    assert a == b


def test_event_log_is_ordered_and_tells_the_story():
    r = simulate(DATA / "seed_incident.yaml", hours=6)
    ts = [row[0] for row in r.events.rows]
    assert ts == sorted(ts)
    waits = r.events.of("wait", "update_recent_deals")
    assert waits and waits[0].target == 250 and waits[0].balance == pytest.approx(AFTER_PAGES)
    grants = r.events.of("grant", "backfill_deals")
    assert grants[0].t == pytest.approx((180 - AFTER_PAGES) / 5 * 60) and grants[0].target == 180
    spends = r.events.of("spend", "backfill_deals")
    assert any(row.cost == 100 for row in spends)  # five products with 30 offers and the buy box: 5 x 20
    df = r.events.to_frame()
    assert {"ts", "t", "event", "task", "balance", "target", "cost", "items", "wait_s"} <= set(df.columns)


def test_every_event_is_of_a_documented_kind(seed_raw):
    from keepa_ops.core.events import KINDS

    seed_raw["tasks"]["update_recent_deals"]["max_wait"] = "60s"
    kinds = {row[1] for row in simulate(seed_raw, hours=12).events.rows}
    kinds |= {row[1] for row in simulate(dict(seed_raw, policy="greedy"), hours=12).events.rows}
    assert kinds <= set(KINDS)
    assert {"run_start", "wait", "heartbeat", "grant", "spend", "upsert", "abort", "run_finish"} <= kinds


def test_fair_policy_splits_the_refill_by_weight(seed_raw):
    seed_raw["policy"] = "fair"
    seed_raw["workload"]["pending_new_deals"] = 5000  # both tasks busy all week
    seed_raw["tasks"]["update_recent_deals"]["weight"] = 3
    seed_raw["tasks"]["backfill_deals"]["weight"] = 1
    s = simulate(seed_raw, hours=168).summary()
    up, bf = s["tasks"]["update_recent_deals"], s["tasks"]["backfill_deals"]
    assert up["tokens_spent"] / bf["tokens_spent"] == pytest.approx(3, rel=0.1)


def test_greedy_policy_digs_a_deficit(seed_raw):
    seed_raw["policy"] = "greedy"
    r = simulate(seed_raw, hours=6)
    balances = [row[3] for row in r.events.of("spend")]
    assert min(balances) < -100


def test_stepped_refill_grants_on_minute_boundaries(seed_raw):
    seed_raw["refill"] = "stepped"
    r = simulate(seed_raw, hours=6)
    grants = r.events.of("grant")
    assert grants and all(row[0] % 60 == 0 for row in grants)
    assert grants[0].t == 2160  # ceil((180 - 4) / 5) = 36 steps


def test_max_wait_exits_make_a_livelock(seed_raw):
    seed_raw["tasks"]["update_recent_deals"]["max_wait"] = "60s"
    s = simulate(seed_raw, hours=12).summary()
    up = s["tasks"]["update_recent_deals"]
    assert up["aborts"] > 600 and up["grants"] == 0 and up["starved"]


def test_cron_upserter_runs_only_on_its_ticks(seed_raw):
    seed_raw["policy"] = "priority"
    seed_raw["tasks"]["update_recent_deals"]["every"] = "*/15 * * * *"
    seed_raw["tasks"]["update_recent_deals"]["page_cost"] = 5
    seed_raw["workload"]["pending_new_deals"] = 0
    r = simulate(seed_raw, hours=48)
    starts = [row[0] for row in r.events.of("run_start", "update_recent_deals")]
    assert len(starts) > 20 and all(t % 900 == 0 for t in starts)


def test_cli_json(capsys):
    assert main(["simulate", str(DATA / "seed_incident.yaml"), "--hours", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["starved"] == ["update_recent_deals"]
    for key in ("first_grant_s", "grants", "items", "tokens_spent", "max_wait_s", "starved"):
        assert key in out["tasks"]["backfill_deals"]
    for key in ("tokens_refilled", "tokens_spent", "tokens_wasted_at_cap", "freshness"):
        assert key in out
    assert set(out["freshness"]) >= {"p50_s", "p95_s", "max_s"}


def test_cli_writes_events_as_jsonl_and_parquet(tmp_path):
    import pandas as pd

    for name in ("ev.jsonl", "ev.parquet"):
        assert main(["simulate", str(DATA / "seed_incident.yaml"), "--hours", "3", "--events",
                     str(tmp_path / name)]) == 0
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    df = pd.read_parquet(tmp_path / "ev.parquet")
    assert len(lines) == len(df) > 0
    assert json.loads(lines[-1])["event"] == df["event"].iloc[-1]


def test_cli_bad_config_is_one_clear_line(tmp_path, capsys, seed_raw):
    import yaml

    seed_raw["tasks"]["backfill_deals"]["batch_size"] = 20
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(seed_raw))
    assert main(["simulate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "backfill_deals" in err and "480" in err and "Traceback" not in err
