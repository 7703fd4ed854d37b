import pytest

from keepa_ops import ConfigError, load_config, parse_config
from keepa_ops.core.schedule import Continuous, Cron, Every
from tests.conftest import DATA


def test_seed_config_files_load():
    from keepa_ops.planning.sweep import load_grid

    files = sorted(DATA.glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        if f.name.endswith("_grid.yaml"):
            assert load_grid(f)
        else:
            load_config(f)
    cfg = load_config(DATA / "seed_incident.yaml")
    up = cfg.tasks["update_recent_deals"]
    assert up.target("threshold") == 250
    assert cfg.tasks["backfill_deals"].target("threshold") == 180
    assert isinstance(up.schedule, Every) and up.schedule.period == 60
    assert isinstance(cfg.tasks["backfill_deals"].schedule, Continuous)
    assert cfg.capacity == 300


def test_unreachable_target_names_task_and_both_numbers(seed_raw):
    seed_raw["tasks"]["backfill_deals"]["batch_size"] = 20
    with pytest.raises(ConfigError) as e:
        parse_config(seed_raw)
    msg = str(e.value)
    assert "backfill_deals" in msg and "480" in msg and "300" in msg
    assert "batch_size to at most 11" in msg


def test_priority_judges_reachability_by_cost(seed_raw):
    seed_raw["policy"] = "priority"
    seed_raw["tasks"]["backfill_deals"]["batch_size"] = 14   # 280 + 80 > 300, but 280 <= 300
    assert parse_config(seed_raw).tasks["backfill_deals"].target("priority") == 280
    seed_raw["tasks"]["backfill_deals"]["batch_size"] = 16   # 320 > 300
    with pytest.raises(ConfigError, match="320"):
        parse_config(seed_raw)


def test_unknown_key_is_named_with_a_suggestion(seed_raw):
    seed_raw["tasks"]["update_recent_deals"]["batchsize"] = 5
    with pytest.raises(ConfigError) as e:
        parse_config(seed_raw)
    assert e.value.field == "tasks.update_recent_deals.batchsize"
    assert "batch_size" in str(e.value)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("batch_size", -3), ("cost_per_item", 0),
                                         ("batch_size", 2.5), ("threshold", -1), ("priority", 0)])
def test_bad_sizes_are_named(seed_raw, field, value):
    seed_raw["tasks"]["update_recent_deals"][field] = value
    with pytest.raises(ConfigError) as e:
        parse_config(seed_raw)
    assert e.value.field == f"tasks.update_recent_deals.{field}"


def test_other_bad_values(seed_raw):
    for key, value, field in [("policy", "priorty", "policy"), ("refill_per_minute", 0, "refill_per_minute"),
                              ("start_tokens", 301, "start_tokens"), ("refill", "smooth", "refill")]:
        raw = dict(seed_raw, **{key: value})
        with pytest.raises(ConfigError) as e:
            parse_config(raw)
        assert e.value.field == field
    bad = dict(seed_raw)
    bad["tasks"] = dict(seed_raw["tasks"])
    bad["tasks"]["update_recent_deals"] = dict(seed_raw["tasks"]["update_recent_deals"], every="*/61 * *")
    with pytest.raises(ConfigError, match="every"):
        parse_config(bad)


def test_cron_and_overrides(seed_raw):
    seed_raw["tasks"]["update_recent_deals"]["every"] = "*/10 * * * *"
    cfg = parse_config(seed_raw)
    sched = cfg.tasks["update_recent_deals"].schedule
    assert isinstance(sched, Cron)
    assert [sched.first_at_or_after(t) for t in (0, 1, 600, 601)] == [0, 600, 600, 1200]
    cfg2 = cfg.with_overrides({"tasks.update_recent_deals.batch_size": 5, "policy": "priority"})
    assert cfg2.tasks["update_recent_deals"].batch_size == 5 and cfg2.policy == "priority"
    assert cfg.tasks["update_recent_deals"].batch_size == 10  # the original is untouched


def test_a_duration_given_as_null_takes_its_default():
    """`starvation_bound:` with no value is the default bound, as a number field's null is its default
    (found by the hostile-config property: it reached the policy as None)."""
    from keepa_ops.config import load_config

    cfg = load_config({"refill_per_minute": 1, "starvation_bound": None, "tasks": {"up": {"role": "upserter"}}})
    assert cfg.starvation_bound == 3600.0
