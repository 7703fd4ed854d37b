"""The layout shows the architecture, and the checks that keep it so can fail."""
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PKG = ROOT / "keepa_ops"
BIN = Path(sys.executable).parent


def test_the_import_contracts_hold():
    """Layers, the engine core's forbidden imports, and no cycles inside a subpackage (pyproject.toml)."""
    r = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_a_contract_that_is_broken_is_reported(tmp_path):
    """The checker is live: an upward import in the core breaks the layers contract."""
    cfg = (ROOT / "pyproject.toml").read_text()
    bad = tmp_path / "pyproject.toml"
    # the same contracts, with the core moved above reports: every import of core by reports breaks it
    assert '    "cli | celery",\n    "reports",' in cfg
    bad.write_text(cfg.replace('    "cli | celery",\n    "reports",', '    "cli | celery",\n    "core",\n    "reports",')
                   .replace('    "config",\n    "core",\n', '    "config",\n'))
    r = subprocess.run([str(BIN / "lint-imports"), "--no-cache", "--config", str(bad)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "BROKEN" in r.stdout


def test_at_most_eight_modules_stand_at_the_top():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 8, top
    for sub in sorted(p for p in PKG.iterdir() if (p / "__init__.py").exists()):
        doc = (sub / "__init__.py").read_text()
        assert doc.startswith('"""') and "import" in doc.split('"""')[1], f"{sub.name} says nothing of its imports"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_cli_and_the_runner_do_not_import_pandas():
    assert "pandas" not in _modules_after("import keepa_ops")
    assert "pandas" not in _modules_after(
        "import contextlib, io\nfrom keepa_ops.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass")
    mods = _modules_after("from keepa_ops.live.runner import run_live\nimport keepa_ops.cli")
    assert "keepa_ops.core.engine" in mods and "pandas" not in mods


def test_the_public_api_resolves_lazily():
    mods = _modules_after("import keepa_ops\nkeepa_ops.simulate")
    assert "keepa_ops.simulation.simulate" in mods and "keepa_ops.logs.parser" not in mods
    import keepa_ops

    for name in keepa_ops.__all__:
        assert getattr(keepa_ops, name) is not None
