"""Diagnosis on logs keepa-ops did not write: the development corpus of the legacy pipeline,
and incident logs from an independent model of it (tests/legacy_model), in every format."""
import gzip
import json
import shutil

import pytest
import yaml

from keepa_ops.cli import main
from keepa_ops.diagnosis import VERDICTS, diagnose
from keepa_ops.logs.parser import parse_logs
from tests.legacy_model import incidents as model

CORPUS = __import__("pathlib").Path(__file__).parent / "data" / "legacy_corpus"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())


def _right(d, verdict, starved, culprit, stalled=None):
    assert d.verdict in verdict, d.report()
    if d.verdict in ("starvation", "healthy"):
        assert d.starved == starved, d.report()
    if culprit:
        assert d.culprit == culprit, d.report()
    if stalled is not None:
        assert [s["task"] for s in d.stalled] == stalled, d.report()


@pytest.fixture(scope="module")
def corpus():
    return {name: diagnose(parse_logs([CORPUS / p for p in e["paths"]])) for name, e in EXPECTED.items()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_development_corpus_is_diagnosed_right(corpus, name):
    e, d = EXPECTED[name], corpus[name]
    _right(d, e["verdict"], e["starved"], e["culprit"])
    assert d.refill_per_minute == pytest.approx(e["refill_per_minute"], rel=0.03)
    for task, target in e["targets"].items():
        assert d.tasks[task]["target"] == target


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e["verdict"] != ["healthy"]])
def test_recommendations_on_the_corpus_are_replayed_before_they_are_offered(corpus, name):
    rec = corpus[name].recommendation
    assert rec["offered"] and rec["predicted"]["starved"] == []
    assert rec["legacy"], "the fix is also said in the legacy pipeline's own terms"


def test_a_livelock_is_fixed_in_the_burst_and_scan_size_its_log_shows(corpus):
    legacy = corpus["ingestor_livelock"].recommendation["legacy"]
    # a page of 5 and a peek of ~32 leave less than the commit's 20 under a burst of 45
    assert any("burst threshold from 45 to at least 57" in item and "SCAN_BATCH_SIZE from 16 to 10" in item
               for item in legacy), legacy


def test_cli_json_carries_every_field_and_cites_lines(capsys):
    e = EXPECTED["seed_incident_rotated"]
    assert main(["diagnose", "--json"] + [str(CORPUS / p) for p in e["paths"]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "starvation" and out["starved"] == ["update_recent_deals"]
    assert out["culprit"] == "backfill_deals" and out["stalled"] == []
    assert out["refill_per_minute"] == 10 and out["refill_source"].startswith("wait_arithmetic")
    for task in ("update_recent_deals", "backfill_deals"):
        assert {"target", "waits", "max_wait_s", "grants", "tokens", "saved"} <= set(out["tasks"][task])
    up = out["tasks"]["update_recent_deals"]
    assert up["waits"] == 1 and up["saved"] == 0 and up["max_wait_s"] > 20 * 3600   # one run, one wait
    assert out["tasks"]["backfill_deals"]["tokens"] == 13114                         # the log's own sum
    assert any("celery_worker.log.1.gz:" in line for line in out["evidence"])
    assert set(out["why_not"]) == set(VERDICTS) - {"starvation"}
    assert out["recommendation"]["offered"]


def test_fail_on_gives_cron_an_exit_code(capsys):
    seed = [str(CORPUS / p) for p in EXPECTED["seed_incident_rotated"]["paths"]]
    healthy = [str(CORPUS / p) for p in EXPECTED["healthy_refill10"]["paths"]]
    assert main(["diagnose", "--no-check", "--fail-on", "starvation,stall"] + seed) == 1
    assert main(["diagnose", "--no-check", "--fail-on", "starvation,stall"] + healthy) == 0
    assert main(["diagnose", "--fail-on", "starvaton"] + healthy) == 2
    err = capsys.readouterr().err
    assert "--fail-on: unknown verdict starvaton" in err and "Traceback" not in err


def test_the_live_file_alone_still_names_the_waiting_run(tmp_path):
    """Given only the live half of a rotated pair, the Upserter's run started before the log: its
    task follows from the lock it holds (every tick skips), and the inference is stated."""
    d = diagnose(parse_logs(CORPUS / "seed_incident_rotated" / "celery_worker.log"), check=False)
    assert d.verdict == "starvation" and d.starved == ["update_recent_deals"] and d.culprit == "backfill_deals"
    assert any("began before the log" in line for line in d.evidence)


def test_a_run_nothing_names_is_insufficient_evidence_with_the_real_reason(tmp_path):
    lines = [
        "[2026-03-11 07:31:46,002: WARNING/ForkPoolWorker-3] Insufficient tokens (Current: 37.00, Target: 210). "
        "Waiting for 1038s.",
        "[2026-03-11 07:49:17,473: WARNING/ForkPoolWorker-3] Insufficient tokens (Current: 207.00, Target: 210). "
        "Waiting for 18s.",
        "[2026-03-11 07:49:47,527: INFO/ForkPoolWorker-3] Tokens recovered (212.00 >= 210). Resuming.",
        "[2026-03-11 07:49:49,663: INFO/ForkPoolWorker-3] Batch API call successful. Tokens consumed: 106. "
        "Tokens left: 106"]
    (tmp_path / "celery_worker.log").write_text("\n".join(lines) + "\n")
    d = diagnose(parse_logs(tmp_path / "celery_worker.log"))
    assert d.verdict == "insufficient_evidence"
    assert "older files" in d.evidence[0] and "worker process" not in d.evidence[0]


# -- bad input ------------------------------------------------------------------------------------
def _seed_tasks(d):
    return {n: (t["grants"], t["tokens"], t["saved"]) for n, t in d.tasks.items()}


def test_overlapping_input_counts_once(tmp_path):
    src = CORPUS / "seed_incident_rotated"
    shutil.copytree(src, tmp_path / "logs")
    once = diagnose(parse_logs(sorted((tmp_path / "logs").iterdir())), check=False)
    twice = diagnose(parse_logs([tmp_path / "logs", tmp_path / "logs" / "celery_worker.log",
                                 tmp_path / "logs" / "celery_worker.log"]), check=False)
    shutil.copy(src / "celery_worker.log", tmp_path / "logs" / "celery_worker.log.bak")   # a copy beside it
    copied = parse_logs(tmp_path / "logs")
    assert _seed_tasks(twice) == _seed_tasks(once)
    assert _seed_tasks(diagnose(copied, check=False)) == _seed_tasks(once)
    assert copied.stats["duplicate_events"] > 1000


def test_a_rotated_set_is_read_in_the_order_of_its_content(tmp_path):
    """Names say .1 is older; here the operator renamed them the wrong way round."""
    src = CORPUS / "seed_incident_rotated"
    (tmp_path / "celery_worker.log").write_bytes(gzip.decompress((src / "celery_worker.log.1.gz").read_bytes()))
    shutil.copy(src / "celery_worker.log", tmp_path / "celery_worker.log.1")
    d = diagnose(parse_logs(tmp_path), check=False)
    _right(d, ["starvation"], ["update_recent_deals"], "backfill_deals")
    assert d.tasks["update_recent_deals"]["waits"] == 1


def test_a_timed_rotation_is_one_stream(tmp_path):
    """TimedRotatingFileHandler names the older file by its date: still one rotated set."""
    src = CORPUS / "seed_incident_rotated"
    older = gzip.decompress((src / "celery_worker.log.1.gz").read_bytes())
    (tmp_path / "celery_worker.log.2026-03-11").write_bytes(older)
    shutil.copy(src / "celery_worker.log", tmp_path / "celery_worker.log")
    parsed = parse_logs(tmp_path)
    assert list(parsed.events["stream"].cat.categories) == ["celery_worker.log"]
    d = diagnose(parsed, check=False)
    _right(d, ["starvation"], ["update_recent_deals"], "backfill_deals")
    assert d.tasks["update_recent_deals"]["waits"] == 1 and not d.attribution["inferred"]


def test_a_line_dated_2099_is_an_outlier_not_a_640000_hour_wait(tmp_path):
    text = (CORPUS / "healthy_refill10.log").read_text().splitlines()
    k = next(i for i, line in enumerate(text) if "Insufficient tokens" in line and i > 3000)
    text[k] = text[k].replace("[2026-03-0", "[2099-03-0")
    (tmp_path / "healthy.log").write_text("\n".join(text) + "\n")
    parsed = parse_logs(tmp_path / "healthy.log")
    assert parsed.stats["time_outliers"] == 1 and parsed.stats["time_outlier_lines"][0].endswith(f":{k + 1}")
    d = diagnose(parsed, check=False)
    assert d.verdict == "healthy" and max(t["max_wait_s"] for t in d.tasks.values()) < 3600


def test_two_hosts_with_the_same_file_name_are_two_streams(tmp_path):
    """host-a and host-b both write celery_worker.log with their own ForkPoolWorker-1."""
    a = model.seed_priority_inversion(tmp_path / "host-a")
    b = model.healthy_named(tmp_path / "host-b", fmt="celery")
    (tmp_path / "host-b" / "deals.log").rename(tmp_path / "host-b" / "celery_worker.log")
    parsed = parse_logs([tmp_path / "host-a", tmp_path / "host-b"])
    assert set(parsed.events["stream"].cat.categories) == {"host-a/celery_worker.log", "host-b/celery_worker.log"}
    alone = diagnose(parse_logs(a.paths), check=False)
    both = diagnose(parsed, check=False)
    assert both.tasks["update_recent_deals"]["waits"] > alone.tasks["update_recent_deals"]["waits"] > 0
    assert b.paths and both.verdict == "starvation"


def test_a_killed_process_that_ran_no_token_task_is_not_a_stall(tmp_path):
    """The OOM killer takes the Janitor mid-run near the end of a healthy log: not a token task."""
    text = (CORPUS / "healthy_refill10.log").read_text().splitlines()
    k = next(i for i in range(len(text) - 1, 0, -1) if text[i].startswith("[2026-03-03 20:1"))
    ts = text[k][1:24]
    text[k + 1:k + 1] = [
        f"[{ts}: INFO/MainProcess] Task keepa_deals.janitor.clean_stale_deals[aa-1] received",
        f"[{ts}: INFO/ForkPoolWorker-9] --- Task: clean_stale_deals started ---",
        f"[{ts}: ERROR/MainProcess] Process 'ForkPoolWorker-9' pid:4242 exited with 'signal 9 (SIGKILL)'",
        f"[{ts}: ERROR/MainProcess] Task handler raised error: WorkerLostError('Worker exited prematurely: "
        f"signal 9 (SIGKILL) Job: 7.')"]
    (tmp_path / "w.log").write_text("\n".join(text) + "\n")
    d = diagnose(parse_logs(tmp_path / "w.log"), check=False)
    assert d.verdict == "healthy" and d.stalled == []


def test_a_solo_pool_runs_its_tasks_in_mainprocess(tmp_path):
    """celery worker --pool=solo: every task line says MainProcess."""
    lines = ["[2026-02-04 10:00:00,010: INFO/MainProcess] Task keepa_deals.simple_task.update_recent_deals[a-1] "
             "received",
             "[2026-02-04 10:00:00,020: INFO/MainProcess] --- Task: update_recent_deals started (Version: 2.1) ---",
             "[2026-02-04 10:00:00,030: WARNING/MainProcess] Insufficient tokens (Current: 24.00, Target: 250). "
             "Waiting for 2712s."]
    lines += ["[2026-02-04 %02d:%02d:00,000: WARNING/MainProcess] Insufficient tokens (Current: %d.00, Target: 250). "
              "Waiting for %ds." % (10 + m // 60, m % 60, 24 + m, (226 - m) * 12) for m in range(15, 180, 15)]
    (tmp_path / "solo.log").write_text("\n".join(lines) + "\n")
    d = diagnose(parse_logs(tmp_path / "solo.log"), check=False)
    assert d.tasks["update_recent_deals"]["waits"] == 1
    assert d.tasks["update_recent_deals"]["max_wait_s"] > 2.5 * 3600


def test_lines_without_times_say_so(tmp_path):
    body = "\n".join(["INFO:keepa_deals.backfiller:--- Task: backfill_deals started ---",
                      "WARNING:keepa_deals.token_manager:Insufficient tokens (Current: 24.00, Target: 180). "
                      "Waiting for 1872s.",
                      "INFO:keepa_deals.keepa_api:Batch API call successful. Tokens consumed: 100. Tokens left: 80"])
    (tmp_path / "x.log").write_text(body + "\n")
    d = diagnose(parse_logs(tmp_path / "x.log"))
    assert d.verdict == "insufficient_evidence" and "times" in d.evidence[0]


def test_any_slice_of_a_real_log_is_diagnosed_without_an_error(tmp_path):
    """Slices, shuffles, truncated lines and mixes of the corpus (a merged log of two eras once
    made the demand rebuild raise): a verdict and a report, never an exception."""
    import random

    rng = random.Random(20260204)
    texts = [(CORPUS / f).read_text().splitlines() for f in ("healthy_refill10.log", "saturation_named.log",
                                                              "ingestor_livelock.log")]
    for k in range(40):
        src = rng.choice(texts)
        a = rng.randrange(len(src))
        lines = src[a:a + rng.choice([5, 50, 500, 3000])]
        if rng.random() < 0.3:
            rng.shuffle(lines)
        if rng.random() < 0.4:
            lines = lines + rng.choice(texts)[:rng.randrange(2000)]
        if rng.random() < 0.2:
            lines = [line[:rng.randrange(len(line) + 1)] for line in lines]
        (tmp_path / "x.log").write_text("\n".join(lines))
        d = diagnose(parse_logs(tmp_path / "x.log"), check=k % 5 == 0)
        assert d.verdict in VERDICTS and d.report() and json.dumps(d.to_dict(), default=str)


# -- the independent model of the legacy system --------------------------------------------------
FORMATS = ("celery", "celery_tasklogger", "named", "basic")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("make", model.ALL, ids=lambda m: m.__name__)
def test_model_incidents_are_diagnosed_right_in_every_format(tmp_path, make, fmt):
    inc = make(tmp_path, fmt=fmt)
    d = diagnose(parse_logs(inc.paths), check=False)
    _right(d, inc.verdict, inc.starved, inc.culprit, inc.stalled)
    if inc.refill:
        assert d.refill_per_minute == pytest.approx(inc.refill, rel=0.03)
    for task, target in inc.targets.items():
        if target is not None:
            assert d.tasks[task]["target"] == target


@pytest.mark.parametrize("fmt", FORMATS + ("pydefault",))
def test_the_parser_reads_every_line_the_model_wrote(tmp_path, fmt):
    """Every line of the model's log that has a logging prefix is an event or an ordinary line; only
    lines with no prefix at all (banner, warning text) may be left over. Each 'Insufficient
    tokens' line the model wrote is one event."""
    inc = model.healthy_through_a_deploy(tmp_path, fmt=fmt)
    text = b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in inc.paths)
    p = parse_logs(inc.paths)
    assert p.stats["lines"] == text.count(b"\n")
    assert set(p.skipped["text"]) <= inc.raw_lines, set(p.skipped["text"]) - inc.raw_lines
    waits = p.events[(p.events["kind"] == "insufficient_tokens")]
    assert len(waits) == text.count(b"Insufficient tokens (Current: ")
    assert (p.events["event"] == "worker_ready").sum() == text.count(b"celery@agentarbitrage ready.")


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("make", [model.seed_after_fix_basic, model.killed_upserter_stall, model.healthy_named,
                                  model.healthy_through_a_deploy, model.peek_commit_livelock],
                         ids=lambda m: m.__name__)
def test_model_incidents_hold_for_other_seeds(tmp_path, make, seed):
    inc = make(tmp_path, seed=seed)
    _right(diagnose(parse_logs(inc.paths), check=False), inc.verdict, inc.starved, inc.culprit, inc.stalled)


def test_stall_recommendation_is_operational(tmp_path):
    inc = model.killed_upserter_stall(tmp_path)
    d = diagnose(parse_logs(inc.paths))
    assert d.verdict == "stall" and d.recommendation["kind"] == "operational"
    s = d.stalled[0]
    assert s["lock_held"] and s["skips_since"] > 10 and "clear update_recent_deals's lock" in s["fix"]
    assert d.recommendation["change"] == {}


# Celery's own retry line, as a real Celery 5 worker writes it ("Retry in 600s", or with a float).
def _celery_retry_log(path, comes_back: bool):
    U, B = "keepa_deals.simple_task.update_recent_deals", "keepa_deals.backfiller.backfill_deals"
    lines = ["[2026-02-04 10:00:00,000: INFO/MainProcess] celery@host ready.",
             f"[2026-02-04 10:00:01,000: INFO/MainProcess] Task {B}[b1] received",
             "[2026-02-04 10:00:01,100: INFO/ForkPoolWorker-1] --- Task: backfill_deals started ---",
             f"[2026-02-04 10:00:02,000: INFO/MainProcess] Task {U}[u1] received",
             "[2026-02-04 10:00:02,100: INFO/ForkPoolWorker-2] --- Task: update_recent_deals started (Version: 1) ---",
             f"[2026-02-04 10:00:02,300: INFO/ForkPoolWorker-2] Task {U}[u1] retry: Retry in 600.5s"]
    t = 10 * 60
    for k in range(24):  # the backfill spends every 5 min for two hours, saving each batch
        m = t + 300 * k
        ts = f"2026-02-04 {10 + m // 3600:02d}:{m // 60 % 60:02d}:{m % 60:02d}"
        lines += [f"[{ts},000: INFO/ForkPoolWorker-1] Batch API call successful. Tokens consumed: 25. Tokens left: 5",
                  f"[{ts},100: INFO/ForkPoolWorker-1] --- Backfill state saved. Page: 0, Chunk: {k + 1} ---"]
        if comes_back and k == 2:
            lines += [f"[{ts},200: INFO/MainProcess] Task {U}[u1] received",
                      f"[{ts},300: INFO/ForkPoolWorker-3] --- Task: update_recent_deals started (Version: 1) ---",
                      f"[{ts},400: INFO/ForkPoolWorker-3] Batch API call successful. Tokens consumed: 20. Tokens left: 0",
                      f"[{ts},500: INFO/ForkPoolWorker-3] Step 6 Complete: Successfully upserted/updated 1 rows.",
                      f"[{ts},600: INFO/ForkPoolWorker-3] --- Task: update_recent_deals finished ---",
                      f"[{ts},700: INFO/ForkPoolWorker-3] Task {U}[u1] succeeded in 0.4s: None"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_celery_retry_is_a_wait_until_the_task_runs_again(tmp_path):
    p = parse_logs(_celery_retry_log(tmp_path / "w.log", comes_back=True))
    d = diagnose(p)
    assert d.verdict == "healthy", d.evidence
    w = p.waits()
    retried = w[(w["task"] == "update_recent_deals") & (w["ended_by"] == "retried")]
    assert len(retried) == 1 and retried["duration_s"].iloc[0] == pytest.approx(1198.1, abs=1)


def test_a_celery_retry_that_never_runs_is_a_stall(tmp_path):
    d = diagnose(parse_logs(_celery_retry_log(tmp_path / "w.log", comes_back=False)))
    assert d.verdict == "stall" and "update_recent_deals" in [s["task"] for s in d.stalled], d.evidence
    assert any("retry" in line and "never ran" in line for line in d.evidence)


def test_a_line_after_a_celery_retry_is_not_the_retried_tasks(tmp_path):
    U = "keepa_deals.simple_task.update_recent_deals"
    log = tmp_path / "w.log"
    log.write_text("\n".join([
        f"[2026-02-04 10:00:00,000: INFO/MainProcess] Task {U}[u1] received",
        "[2026-02-04 10:00:00,100: INFO/ForkPoolWorker-2] --- Task: update_recent_deals started (Version: 1) ---",
        f"[2026-02-04 10:00:00,200: INFO/ForkPoolWorker-2] Task {U}[u1] retry: Retry in 60s",
        # the process takes another task, one that logs no start line of its own
        "[2026-02-04 10:00:05,000: INFO/ForkPoolWorker-2] Batch API call successful. Tokens consumed: 7. Tokens left: 90",
    ]) + "\n")
    ev = parse_logs(log).events
    spend = ev[ev["event"] == "spend"]
    assert len(spend) == 1 and spend["task"].isna().all()
