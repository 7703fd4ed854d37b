"""The notebook pipeline: 01 parse -> 02 diagnose -> 03 sweep -> 04 run, with papermill.

Invariants:
* each step runs in its own ``output_dir`` under the run folder and gets the files the
  previous step wrote (events.parquet -> diagnosis -> fixed_schedule.yaml -> run);
* every executed notebook is kept, with a self-contained HTML report beside it
  (plotly.js inline, no CDN: it reads offline);
* a failing step stops the pipeline with papermill's error and the executed
  notebook's path; the run is still recorded in ``runs/index.json`` with its outcome.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import KeepaOpsError
from . import bundled
from .bundled import STEPS

NOTEBOOK_DIR = bundled.notebook(STEPS[0]).parent  # package data: the pipeline runs from any directory
RENDERER = "plotly_mimetype+notebook"  # plotly.js inline in the first figure's output: offline HTML
_CDN_TRAITS = ("require_js_url", "mathjax_url", "jquery_url", "mermaid_js_url", "mermaid_layout_elk_js_url",
               "widget_renderer_url", "jupyter_widgets_base_url")


CELL_TIMEOUT_S = 900.0  # one cell, at most (the sweep's is the longest: about a minute here)
MAX_NOTEBOOK_MB = 50     # an executed notebook, at most


class _TooLarge(Exception):
    pass


class PipelineError(KeepaOpsError):
    """A step failed: the message has papermill's error and the executed notebook's path."""

    def __init__(self, step: str, error: str, notebook: Path):
        self.step, self.error, self.notebook = step, error, notebook
        super().__init__(f"step {step} failed: {error}. Executed notebook: {notebook}")


@dataclass
class PipelineRun:
    out: Path
    steps: list = field(default_factory=list)
    outcome: str = "running"
    verdict: str | None = None     # what 02 diagnosed, once it has run

    def summary(self) -> dict:
        return {"run": self.out.name, "out": str(self.out), "outcome": self.outcome, "verdict": self.verdict,
                "steps": self.steps}


PLOTLY_JS = "plotly.min.js"


def html_report(notebook: Path, html: Path) -> Path:
    """An HTML page of an executed notebook that reads offline: its outputs, without the code
    (the executed notebook keeps it), and plotly.js from one file beside it, never a CDN."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, **{t: "" for t in _CDN_TRAITS})
    body, _ = exporter.from_filename(str(notebook))
    if re.search(r'<(?:script|link)[^>]+(?:src|href)="https?://', body):
        raise KeepaOpsError(f"{html.name} would load a script or style from the network")
    lib = html.parent / PLOTLY_JS
    if "Plotly.newPlot" in body:
        if not lib.exists():
            from plotly.offline import get_plotlyjs

            lib.write_text(get_plotlyjs())
        body = body.replace("<head>", f'<head>\n<script src="{PLOTLY_JS}"></script>', 1)
    html.write_text(body)
    return html


def _record(runs_dir: Path, run: PipelineRun, keep: int | None = None) -> Path:
    """Add ``run`` to ``runs_dir/index.json`` and ``index.html``; with ``keep``, delete the run folders
    beyond the newest ``keep`` others. Only folders that the index lists are ever deleted."""
    import html as h
    import shutil

    index = runs_dir / "index.json"
    entries = json.loads(index.read_text()) if index.exists() else []
    entries = [e for e in entries if e.get("run") != run.out.name] + [run.summary()]
    if keep is not None and len(entries) > keep + 1:
        for old in entries[:len(entries) - keep - 1]:
            folder = runs_dir / str(old.get("run", ""))
            if old.get("run") and folder.parent == runs_dir and (folder / "run.json").exists():
                shutil.rmtree(folder, ignore_errors=True)
        entries = entries[len(entries) - keep - 1:]
    index.write_text(json.dumps(entries, indent=1))

    def row(e):
        failed = next((s for s in e.get("steps", []) if s.get("status") == "failed"), None)
        why = f"{failed['step']}: {failed.get('error', '')}" if failed else ""
        links = " ".join(f"<a href='{h.escape(e['run'])}/{s['step']}.html'>{s['step']}</a>"
                         for s in e.get("steps", []) if s.get("html"))
        return (f"<tr><td>{h.escape(e['run'])}</td><td class='{h.escape(e['outcome'])}'>{h.escape(e['outcome'])}</td>"
                f"<td>{h.escape(str(e.get('verdict') or ''))}</td><td>{h.escape(why)}</td><td>{links}</td></tr>")

    (runs_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>keepa-ops runs</title>"
        "<style>body{font-family:sans-serif}td{padding:4px 10px;vertical-align:top}.failed{color:#c00}"
        ".ok{color:#080}</style><h1>keepa-ops pipeline runs</h1><table><tr><th>run</th><th>outcome</th>"
        "<th>verdict</th><th>failed step</th><th>reports</th></tr>"
        + "\n".join(row(e) for e in reversed(entries)) + "</table>")
    return index


def run_pipeline(logs=None, out=None, config=None, grid=None, hours: float = 168.0, duration: str = "3h",
                 speed: float = 720.0, keepa_url: str | None = None, kernel: str = "python3",
                 log=print, cell_timeout: float = CELL_TIMEOUT_S, keep: int | None = None) -> PipelineRun:
    """Run the four notebooks in order into ``out`` (default runs/<UTC timestamp>).

    A cell that runs longer than ``cell_timeout`` seconds, or an executed notebook larger than
    ``MAX_NOTEBOOK_MB``, stops the pipeline at that step with one line (a log line dated decades
    ahead must not become a notebook of gigabytes). ``keep``: keep only the newest ``keep``
    earlier runs of the same runs folder.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # every path absolute, and each notebook runs in the run folder: nothing lands anywhere else
    out = (Path(out) if out else Path("runs") / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out.parent
    logs = [str(Path(p).resolve()) for p in (logs or [bundled.data("sample_logs")])]
    config = str(Path(config).resolve()) if config else None
    grid = str(Path(grid or bundled.data("pipeline_grid.yaml")).resolve())
    os.environ["PLOTLY_RENDERER"] = RENDERER
    run = PipelineRun(out)
    dirs = {s: out / s for s in STEPS}
    params = {
        "01_parse_logs": {"logs": logs},
        "02_diagnose_starvation": {"events": str(dirs["01_parse_logs"] / "events.parquet")},
        "03_sweep": {"base_config": config or str(dirs["02_diagnose_starvation"] / "rebuilt_config.yaml"),
                     "grid": grid, "hours": float(hours)},
        "04_run_schedule": {"config": str(dirs["03_sweep"] / "fixed_schedule.yaml"), "duration": duration,
                            "speed": float(speed), "keepa_url": keepa_url,
                            "incident_events": str(dirs["01_parse_logs"] / "events.parquet")},
    }
    try:
        for step in STEPS:
            dirs[step].mkdir(exist_ok=True)
            executed = out / f"{step}.ipynb"
            t0 = time.monotonic()
            log(f"[pipeline] {step} ...")
            rec = {"step": step, "notebook": str(executed), "output_dir": str(dirs[step])}
            run.steps.append(rec)
            try:
                pm.execute_notebook(str(bundled.notebook(step)), str(executed),
                                    parameters={**params[step], "output_dir": str(dirs[step])},
                                    kernel_name=kernel, cwd=str(out), progress_bar=False,
                                    execution_timeout=max(1, math.ceil(cell_timeout)),
                                    # the kernel's own warnings (e.g. "running over TCP without encryption"
                                    # on loopback) are not the step's: they only look like errors
                                    extra_arguments=["--IPKernelApp.log_level=ERROR"])
                size_mb = executed.stat().st_size / 1e6
                if size_mb > MAX_NOTEBOOK_MB:
                    raise _TooLarge(f"the executed notebook is {size_mb:.0f} MB, above {MAX_NOTEBOOK_MB} MB")
            except (pm.PapermillExecutionError, CellTimeoutError, _TooLarge) as e:
                if isinstance(e, CellTimeoutError):
                    e.ename, e.evalue = "CellTimeoutError", f"a cell ran longer than {max(1, math.ceil(cell_timeout))} s"
                elif isinstance(e, _TooLarge):
                    e.ename, e.evalue = "TooLarge", str(e)
                rec.update(status="failed", seconds=round(time.monotonic() - t0, 2),
                           error=f"{e.ename}: {e.evalue}")
                if step == "02_diagnose_starvation" and (dirs[step] / "diagnosis.json").exists():
                    run.verdict = json.loads((dirs[step] / "diagnosis.json").read_text())["verdict"]
                if executed.exists():
                    rec["html"] = str(html_report(executed, out / f"{step}.html"))
                raise PipelineError(step, f"{e.ename}: {e.evalue}", executed) from None
            rec["html"] = str(html_report(executed, out / f"{step}.html"))
            rec.update(status="ok", seconds=round(time.monotonic() - t0, 2))
            if step == "02_diagnose_starvation":
                run.verdict = json.loads((dirs[step] / "diagnosis.json").read_text())["verdict"]
            log(f"[pipeline] {step} ok in {rec['seconds']:.1f}s -> {rec['html']}")
        run.outcome = "ok"
    except BaseException:  # recorded as failed, then re-raised
        run.outcome = "failed"
        raise
    finally:
        (out / "run.json").write_text(json.dumps(run.summary(), indent=1))
        _record(runs_dir, run, keep)
    return run
