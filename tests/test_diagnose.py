"""keepa-ops reads back its own logs: the engine's events written in the legacy format
(``legacy_log``) and as JSON lines, diagnosed as the simulator ran them. This only shows that
keepa-ops understands itself; the diagnosis of logs keepa-ops did not write (the legacy corpus,
the independent model of the legacy pipeline) is tested in test_legacy_logs.py."""
import json

import pytest

from keepa_ops.cli import main
from keepa_ops.diagnosis import diagnose
from keepa_ops.logs.incidents import INCIDENTS, make_incident_log
from keepa_ops.logs.parser import parse_logs
from keepa_ops.diagnosis.replay import replay


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("incidents")
    out = {}
    for name in INCIDENTS:
        r = make_incident_log(name, d / f"{name}.log")
        out[name] = (d / f"{name}.log", r)
    return out


@pytest.mark.parametrize("name", list(INCIDENTS))
def test_round_trip_recovers_the_ground_truth(logs, name):
    raw, hours, verdict, starved, culprit = INCIDENTS[name]
    path, sim = logs[name]
    d = diagnose(parse_logs(path))
    truth = sim.summary()
    assert d.verdict == verdict
    assert d.refill_per_minute == raw["refill_per_minute"]
    if starved is not None:
        assert d.starved == starved
        assert set(d.starved) <= set(truth["starved"])
    if culprit:
        assert d.culprit == culprit
    if verdict != "deficit_spiral":
        for task in sim.config.tasks:
            waited = {r[4] for r in sim.events.of("wait", task)}
            if waited:
                assert d.tasks[task]["target"] in waited
    if verdict != "healthy":
        pred = d.recommendation["predicted"]
        assert pred["starved"] == [], d.recommendation["summary"]


def test_seed_shaped_log_and_replayed_recommendation(logs):
    path, _ = logs["seed_before_fix"]
    d = diagnose(parse_logs(path))
    assert d.verdict == "starvation" and d.starved == ["update_recent_deals"] and d.culprit == "backfill_deals"
    assert d.tasks["update_recent_deals"]["target"] == 250 and d.tasks["backfill_deals"]["target"] == 180
    assert d.tasks["update_recent_deals"]["grants"] == 0 and d.tasks["backfill_deals"]["grants"] > 50
    # the Upserter's first wait, after Keepa charged the four deal-list pages the config thinks free
    assert any("Current 4.00, Target 250" in e for e in d.evidence), d.evidence
    assert d.recommendation["change"]["policy"] == "priority"
    before = d.recommendation["as_logged_simulated"]
    assert before["starved"] == ["update_recent_deals"]            # the rebuilt demand reproduces the incident
    assert d.recommendation["predicted"]["starved"] == []          # and the change removes it


def test_replay_side_by_side(logs):
    path, _ = logs["seed_before_fix"]
    r = replay(parse_logs(path), {"policy": "priority"})
    assert r["logged"]["starved"] == ["update_recent_deals"]
    assert r["as_logged_simulated"]["starved"] == ["update_recent_deals"]
    assert r["replayed"]["starved"] == []
    assert r["rebuilt"]["refill_per_minute"] == 5 and r["rebuilt"]["start_tokens"] == 24
    assert r["rebuilt"]["tasks"]["backfill_deals"]["batch_size"] == 5
    assert r["rebuilt"]["tasks"]["backfill_deals"]["cost_per_item"] == 20
    assert r["rebuilt"]["tasks"]["update_recent_deals"]["every"] == "60s"
    assert r["rebuilt"]["workload"]["pending_new_deals"] == 300
    up = r["rebuilt"]["tasks"]["update_recent_deals"]
    assert up["batch_size"] * up["cost_per_item"] + up["threshold"] == 250  # the target the log shows


def test_cli_diagnose_json(logs, capsys):
    path, _ = logs["seed_before_fix"]
    assert main(["diagnose", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "starvation" and out["starved"] == ["update_recent_deals"]
    assert out["culprit"] == "backfill_deals" and out["refill_per_minute"] == 5
    for key in ("target", "waits", "max_wait_s", "grants"):
        assert key in out["tasks"]["update_recent_deals"]
    assert out["recommendation"]["predicted"]["starved"] == []


def test_cli_replay_with_a_config_file(logs, tmp_path, capsys):
    path, _ = logs["seed_after_fix"]
    alt = tmp_path / "alt.yaml"
    alt.write_text("policy: priority\nstarvation_bound: 1h\n")
    assert main(["replay", str(path), "--config", str(alt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["logged"]["starved"] == ["backfill_deals"] and out["replayed"]["starved"] == []


def test_our_own_event_log_diagnoses_like_the_legacy_one(tmp_path):
    from keepa_ops import simulate

    from keepa_ops.logs.incidents import INCIDENTS as I

    r = simulate(I["seed_before_fix"][0], 24)
    r.events.write(tmp_path / "events.jsonl")
    d = diagnose(parse_logs(tmp_path / "events.jsonl"), check=False)
    assert d.verdict == "starvation" and d.starved == ["update_recent_deals"] and d.culprit == "backfill_deals"


@pytest.mark.parametrize("text,token_events", [
    (b"", 0),
    (b"[2026-02-04 10:00:00,000: INFO/MainProcess] celery@host ready.\n", 1),   # a worker start, no token line
    # the only two lines that survive from the incident: no task, no process, a day apart
    (b"2026-02-04 10:15:02,481 - WARNING - Insufficient tokens (Current: 24.00, Target: 250). Waiting...\n"
     b"2026-02-05 09:00:00,000 - WARNING - Insufficient tokens (Current: 37.00, Target: 50). Waiting for 216s.\n", 2),
])
def test_no_evidence_is_said_not_called_healthy(tmp_path, text, token_events):
    from keepa_ops.errors import KeepaOpsError

    f = tmp_path / "x.log"
    f.write_bytes(text)
    parsed = parse_logs(f)
    d = diagnose(parsed)
    assert d.verdict == "insufficient_evidence" and parsed.stats["events"] == token_events
    assert d.refill_per_minute is None          # two lines a day apart say nothing about the refill
    with pytest.raises(KeepaOpsError, match="no demand to replay"):
        replay(parsed, {"policy": "priority"})


def test_committed_sample_logs_are_what_keepa_ops_generates(tmp_path):
    """data/sample_logs is incidents.write_sample_logs' output; if the engine changes, regenerate it."""
    import gzip

    from keepa_ops.logs.incidents import write_sample_logs
    from tests.conftest import DATA

    def text(p):
        return gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()

    fresh = write_sample_logs(tmp_path)
    for f in fresh:
        assert text(f) == text(DATA / "sample_logs" / f.name), f"regenerate data/sample_logs ({f.name} differs)"
