"""The notebook pipeline end to end, with a real Jupyter kernel, small parameters."""
import json
import re

import pytest
import yaml

from keepa_ops import load_config
from keepa_ops.reports.pipeline import STEPS, PipelineError, run_pipeline
from tests.conftest import DATA


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    grid = d / "grid.yaml"
    grid.write_text(yaml.safe_dump({"policy": ["threshold", "priority"],
                                    "tasks.update_recent_deals.page_cost": [5], "tasks.backfill_deals.page_cost": [5],
                                    "tasks.update_recent_deals.every": ["10m", "30m"]}))
    # No config: the sweep starts from the demand rebuilt from the logs, as for an operator's own logs.
    return run_pipeline(out=d / "r1", grid=grid, hours=48, duration="1h", speed=720, log=lambda m: None)


def test_every_step_leaves_a_notebook_a_report_and_its_outputs(run):
    assert run.outcome == "ok" and [s["step"] for s in run.steps] == list(STEPS)
    for step in STEPS:
        assert (run.out / f"{step}.ipynb").exists()
        html = (run.out / f"{step}.html").read_text()
        assert not re.search(r'<(?:script|link)[^>]+(?:src|href)="https?://', html), f"{step} uses a CDN"
    figs = (run.out / "01_parse_logs.html").read_text()
    assert "Plotly.newPlot" in figs and "update_recent_deals target 250" in figs
    assert (run.out / "01_parse_logs" / "events.parquet").exists()
    diag = json.loads((run.out / "02_diagnose_starvation" / "diagnosis.json").read_text())
    assert diag["verdict"] == "starvation" and diag["starved"] == ["update_recent_deals"]
    rebuilt = yaml.safe_load((run.out / "02_diagnose_starvation" / "rebuilt_config.yaml").read_text())
    assert rebuilt["refill_per_minute"] == 5 and set(rebuilt["tasks"]) == {"update_recent_deals", "backfill_deals"}
    fixed = load_config(run.out / "03_sweep" / "fixed_schedule.yaml")    # 03's output feeds 04
    assert fixed.policy == "priority" and fixed.refill_per_minute == 5
    summary = json.loads((run.out / "04_run_schedule" / "run.json").read_text())
    assert summary["stored"]["live"]["deals"] > 0 and summary["embedded_fake_keepa"]
    index = json.loads((run.out.parent / "index.json").read_text())
    assert index[-1]["run"] == "r1" and index[-1]["outcome"] == "ok"


def test_a_healthy_legacy_log_runs_through_to_the_end(tmp_path, monkeypatch):
    """The nightly cron's usual case: nothing to fix, so 02 hands on the demand as logged. The run
    folder is given relative to where the operator stands, and every file lands under it."""
    from pathlib import Path

    log = Path(__file__).parent / "data" / "legacy_corpus" / "healthy_refill10.log"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEPA_API_KEY", "kx-production-key-0000")  # a key in the environment, and no URL
    r = run_pipeline(logs=[log], out="h", hours=24, duration="30m", speed=720, log=lambda m: None)
    assert r.outcome == "ok" and r.out == tmp_path / "h"
    ran = json.loads((r.out / "04_run_schedule" / "run.json").read_text())
    assert ran["embedded_fake_keepa"] and ran["keepa_url"].startswith("http://127.0.0.1:")  # not api.keepa.com
    diag = json.loads((tmp_path / "h" / "02_diagnose_starvation" / "diagnosis.json").read_text())
    assert diag["verdict"] == "healthy"
    rebuilt = yaml.safe_load((r.out / "02_diagnose_starvation" / "rebuilt_config.yaml").read_text())
    assert rebuilt["refill_per_minute"] == 10
    assert json.loads((r.out / "run.json").read_text())["verdict"] == "healthy"
    assert json.loads((tmp_path / "index.json").read_text())[-1]["verdict"] == "healthy"


def test_a_log_without_evidence_stops_at_02_and_says_why(tmp_path):
    log = tmp_path / "empty.log"
    log.write_text("[2026-02-04 10:00:00,000: INFO/MainProcess] celery@host ready.\n")
    with pytest.raises(PipelineError) as e:
        run_pipeline(logs=[log], out=tmp_path / "x", log=lambda m: None)
    assert e.value.step == "02_diagnose_starvation" and "insufficient evidence: the log holds no token lines" in str(e.value)
    assert json.loads((tmp_path / "index.json").read_text())[-1]["verdict"] == "insufficient_evidence"
    page = (tmp_path / "index.html").read_text()
    assert "<td>insufficient_evidence</td>" in page and "02_diagnose_starvation: KeepaOpsError: insufficient evidence" in page


def test_keep_prunes_the_oldest_runs_of_the_index_and_nothing_else(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    for name in ("a", "b", "c"):
        with pytest.raises(PipelineError):
            run_pipeline(logs=[tmp_path / "missing.log"], out=tmp_path / name, keep=1, log=lambda m: None)
    assert not (tmp_path / "a").exists() and (tmp_path / "b" / "run.json").exists() and (tmp_path / "c").exists()
    assert (tmp_path / "not_a_run").exists()
    assert [e["run"] for e in json.loads((tmp_path / "index.json").read_text())] == ["b", "c"]
    assert "01_parse_logs: LogParseError" in (tmp_path / "index.html").read_text()


def test_a_failing_step_stops_with_the_error_and_the_notebook(tmp_path):
    with pytest.raises(PipelineError) as e:
        run_pipeline(logs=[tmp_path / "missing.log"], out=tmp_path / "bad", log=lambda m: None)
    assert e.value.step == "01_parse_logs" and "LogParseError" in str(e.value)
    assert str(tmp_path / "bad" / "01_parse_logs.ipynb") in str(e.value)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index[-1]["outcome"] == "failed" and len(index[-1]["steps"]) == 1


def test_the_key_stays_out_of_an_executed_notebook(tmp_path, monkeypatch):
    """04 against a real URL: the key comes from the environment and lands in no output."""
    import papermill as pm

    from keepa_ops.live.fake_server import FakeKeepa
    from keepa_ops.reports.pipeline import NOTEBOOK_DIR, html_report

    secret = "nb-secret-5b0c7e19f2"
    fake = FakeKeepa(5, 300, speed=720, pending=20, backlog=200, keys=[secret])
    url = fake.serve()
    monkeypatch.setenv("KEEPA_API_KEY", secret)
    out = tmp_path / "out"
    try:
        pm.execute_notebook(str(NOTEBOOK_DIR / "04_run_schedule.ipynb"), str(tmp_path / "04.ipynb"),
                            parameters={"config": str(DATA / "fixed_schedule.yaml"), "duration": "30m",
                                        "speed": 720.0, "keepa_url": url, "output_dir": str(out)},
                            kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=False)
    finally:
        fake.shutdown()
    html_report(tmp_path / "04.ipynb", tmp_path / "04.html")
    summary = json.loads((out / "run.json").read_text())
    assert summary["keepa_url"] == url and not summary["embedded_fake_keepa"]
    assert summary["stored"]["live"]["deals"] > 0          # it really talked to the keyed server
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f"the key leaked into {f.name}"


def test_a_cell_past_its_time_limit_stops_the_pipeline_with_one_line(tmp_path):
    with pytest.raises(PipelineError) as e:
        run_pipeline(out=tmp_path / "run", cell_timeout=1, log=lambda *a: None)
    assert "\n" not in str(e.value) and "CellTimeoutError: a cell ran longer than 1 s" in str(e.value)
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["outcome"] == "failed"


@pytest.mark.parametrize("step", ["01_parse_logs", "02_diagnose_starvation", "03_sweep", "04_run_schedule"])
def test_papermill_infers_a_type_for_every_parameter(step):
    import subprocess
    import sys
    from pathlib import Path

    from keepa_ops.reports import bundled

    papermill = Path(sys.executable).parent / "papermill"
    out = subprocess.run([str(papermill), "--help-notebook", str(bundled.notebook(step))], capture_output=True,
                         text=True)
    lines = [ln for ln in out.stdout.splitlines() if re.match(r"  \w+: ", ln)]
    assert out.returncode == 0 and lines, out.stdout + out.stderr
    assert not any("Unknown type" in ln for ln in lines), lines


def test_every_report_draws_its_figures_in_a_real_browser_offline(run):
    """Each report in headless Chromium, the network blocked: every plotly figure drew, the console
    is silent, nothing was fetched from the network, no code shows, and the diagnosis opens with
    its verdict."""
    from tests.browser import render

    for step in STEPS:
        page = run.out / f"{step}.html"
        dom, console, urls = render(page)
        figures = re.findall(r'<div[^>]*class="(plotly-graph-div[^"]*)"', dom)
        assert figures, f"{step}: no figure"
        assert all("js-plotly-plot" in c for c in figures), f"{step}: a figure did not draw"
        assert dom.count('class="main-svg"') >= len(figures), step
        assert console == [], f"{step}: {console[:3]}"
        assert urls == [], f"{step} asked the network for {urls[:3]}"
        assert not re.search(r'class="[^"]*(jp-CodeMirrorEditor|highlight hl-ipython)', dom), f"{step} shows code"
    text = re.sub(r"<[^>]+>", " ", render(run.out / "02_diagnose_starvation.html")[0])
    first = " ".join(text.split()).split("Same step in a shell:", 1)[1]
    verdict = json.loads((run.out / "02_diagnose_starvation" / "diagnosis.json").read_text())["verdict"]
    assert f"Verdict: {verdict}." in first[:200], first[:300]  # the first lines after the title
