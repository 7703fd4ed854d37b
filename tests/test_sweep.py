"""Sweeps on the seed workload: flags, Pareto front, the recommendation and its bound."""
import pandas as pd
import pytest
import yaml

from keepa_ops import ConfigError, load_config, simulate
from keepa_ops.cli import main
from keepa_ops.planning.sweep import load_grid, physical_bound, choose_config, sweep
from tests.conftest import DATA

UP = "tasks.update_recent_deals"


@pytest.fixture(scope="module")
def table():
    return sweep(DATA / "seed_incident.yaml", DATA / "seed_grid.yaml", hours=168, workers=2, progress=None)


def row(df, policy, batch, every, page):
    m = ((df["set:policy"] == policy) & (df[f"set:{UP}.batch_size"] == batch) & (df[f"set:{UP}.every"] == every)
         & (df[f"set:{UP}.page_cost"] == page))
    assert m.sum() == 1
    return df[m].iloc[0]


def test_threshold_starvation_is_flagged_and_priority_never_starves(table):
    assert len(table) == 32 and table["valid"].all()
    # the incident: an Upserter batch of 10 (target 250) against a Backfiller target of 180
    assert row(table, "threshold", 10, "60s", 0)["starved_tasks"] == "update_recent_deals"
    # the fix's next day: an every-minute Upserter whose page fetches take the whole refill
    r = row(table, "threshold", 5, "60s", 5)
    assert r["starved_tasks"] == "backfill_deals" and r["backfill_per_day"] == 0
    pri = table[table["policy"] == "priority"]
    # priority serves every task within the bound when its estimates are Keepa's prices; with the
    # legacy belief that a /deal page is free, the unadmitted peeks push some rows past it
    true_cost = pri[pri[f"set:{UP}.page_cost"] == 5]
    assert len(true_cost) == 8 and not true_cost["starved"].any()


def test_flags_agree_with_a_direct_simulation(table):
    base = load_config(DATA / "seed_incident.yaml")
    for _, r in table.sample(6, random_state=1).iterrows():
        overrides = {k[4:]: (v.item() if hasattr(v, "item") else v) for k, v in r.items() if k.startswith("set:")}
        s = simulate(base.with_overrides(overrides), 168).summary()
        assert ",".join(s["starved"]) == r["starved_tasks"]
        assert s["backfill_per_day"] == pytest.approx(r["backfill_per_day"])


def test_pareto_front_is_starvation_free_and_undominated(table):
    front = table[table["pareto"]]
    assert len(front) >= 1 and not front["starved"].any()
    ok = table[table["valid"] & ~table["starved"]]
    for _, f in front.iterrows():
        better = ok[(ok["steady_p95_s"] <= f["steady_p95_s"]) & (ok["backfill_per_day"] >= f["backfill_per_day"])
                    & ((ok["steady_p95_s"] < f["steady_p95_s"]) | (ok["backfill_per_day"] > f["backfill_per_day"]))]
        assert better.empty


def test_recommendation_is_starvation_free_and_near_the_physical_bound(table, tmp_path):
    rec = choose_config(table, DATA / "seed_incident.yaml")
    assert not rec["row"]["starved"] and rec["row"]["steady_p95_s"] <= 3600
    assert rec["backfill_share_of_bound"] >= 0.95
    # the written fixed schedule is a config `keepa-ops run` takes unchanged, and it predicts the same
    out = tmp_path / "fixed.yaml"
    assert main(["sweep", "--config", str(DATA / "seed_incident.yaml"), "--grid", str(DATA / "seed_grid.yaml"),
                 "--recommend", str(out), "--out", str(tmp_path / "s.parquet"), "--quiet"]) == 0
    fixed = load_config(out)
    s = simulate(fixed, 168).summary()
    assert s["starved"] == [] and s["backfill_per_day"] == pytest.approx(rec["row"]["backfill_per_day"])
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 32


def test_physical_bound_arithmetic():
    cfg = load_config(DATA / "seed_incident.yaml")
    b = physical_bound(cfg, 168)
    assert b["all_deals_per_day"] == 360                     # 5 x 1440 / 20
    live = (300 + 6 * 168) * 20
    assert b["live_tokens"] == live
    assert b["backfill_bound_per_day"] == pytest.approx((24 + 5 * 60 * 168 - live) / 20 / 7)


def test_same_result_on_one_core_or_two():
    grid = {"policy": ["threshold", "priority", "fair"], f"{UP}.batch_size": [2, 10]}
    one = sweep(DATA / "seed_incident.yaml", grid, hours=48, workers=1, progress=None)
    two = sweep(DATA / "seed_incident.yaml", grid, hours=48, workers=2, progress=None)
    pd.testing.assert_frame_equal(one, two)


def test_invalid_points_are_rows_and_bad_keys_are_errors():
    df = sweep(DATA / "seed_incident.yaml", {"tasks.backfill_deals.batch_size": [5, 20]}, hours=24, workers=1,
               progress=None)
    assert df["valid"].tolist() == [True, False] and "480" in df["error"].iloc[1]
    with pytest.raises(ConfigError, match="batchsize"):
        sweep(DATA / "seed_incident.yaml", {"tasks.backfill_deals.batchsize": [5]}, hours=1, workers=1, progress=None)
    with pytest.raises(ConfigError):
        load_grid(yaml.safe_dump([1, 2]))


def test_a_workload_with_no_live_arrivals_still_gets_a_fixed_schedule(tmp_path):
    from keepa_ops.planning.sweep import write_fixed_schedule

    base = load_config(DATA / "seed_incident.yaml").with_overrides({
        "workload.new_deals_per_hour": 0, "tasks.update_recent_deals.page_cost": 5, "tasks.backfill_deals.page_cost": 5})
    base.dump(tmp_path / "base.yaml")
    df = sweep(tmp_path / "base.yaml", {"policy": ["threshold", "priority"]}, hours=48, workers=1, progress=None)
    assert df["steady_p95_s"].isna().all()          # nothing arrives in the second half
    rec = choose_config(df, tmp_path / "base.yaml")
    assert rec["overrides"] == {"policy": "priority"}
    out = write_fixed_schedule(rec, tmp_path / "fixed.yaml")
    assert "no live deals arrive in steady state" in out.read_text()
    assert load_config(out).policy == "priority"


def test_committed_fixed_schedule_is_what_the_sweep_recommends():
    """data/fixed_schedule.yaml is `keepa-ops sweep --config data/seed_incident.yaml --grid
    data/pipeline_grid.yaml --recommend ...`; if the engine changes, regenerate it."""
    df = sweep(DATA / "seed_incident.yaml", DATA / "pipeline_grid.yaml", hours=168, workers=2, progress=None)
    rec = choose_config(df, DATA / "seed_incident.yaml")
    assert rec["config"].raw == load_config(DATA / "fixed_schedule.yaml").raw


def test_a_grid_can_name_tasks_by_role(seed_raw):
    """The pipeline's grid fits any demand rebuilt from logs: @upserter is whatever the upserter is
    called, and a role the config lacks drops its keys with a note."""
    raw = dict(seed_raw, tasks={"smart_ingestor": dict(seed_raw["tasks"]["update_recent_deals"])})
    grid = {"tasks.@upserter.batch_size": [1, 5], "tasks.@backfiller.batch_size": [5, 10],
            "policy": ["threshold", "priority"]}
    df = sweep(raw, grid, hours=6, workers=1, progress=None)
    assert len(df) == 4 and df["valid"].all()
    assert sorted(df["set:tasks.smart_ingestor.batch_size"].unique()) == [1, 5]
    assert df.attrs["notes"] == ["grid.tasks.@backfiller.batch_size left out: the config has no backfiller"]


def test_a_grid_key_naming_a_missing_task_is_refused_before_sweeping(seed_raw):
    with pytest.raises(ConfigError, match=r"grid.tasks.update_recnt_deals.batch_size: names the task"):
        sweep(seed_raw, {"tasks.update_recnt_deals.batch_size": [1, 5]}, hours=1, workers=1, progress=None)


def test_a_grid_of_only_invalid_points_says_so(seed_raw):
    from keepa_ops import KeepaOpsError

    with pytest.raises(KeepaOpsError, match=r"no point of the grid is valid \(2 tried\); the first "
                                             r"\(tasks.backfill_deals.batch_size=40\) fails with tasks.backfill_deals"):
        sweep(seed_raw, {"tasks.backfill_deals.batch_size": [40, 50]}, hours=1, workers=1, progress=None)
