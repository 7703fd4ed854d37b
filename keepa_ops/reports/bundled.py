"""What ships inside the package: the four notebooks, the sample logs and the example configs.

They are package data (``keepa_ops/reports/notebooks/``, ``keepa_ops/data/``), found with
``importlib.resources``, so ``pip install keepa-ops[notebooks]`` or ``pipx install`` runs the
pipeline from any directory; in a checkout, ``notebooks/`` and ``data/`` at the top are
links to the same files.

Invariant: every path returned is absolute, so a notebook that papermill runs in another
working directory reads and writes the same files.
"""
from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

STEPS = ("01_parse_logs", "02_diagnose_starvation", "03_sweep", "04_run_schedule")


def _root() -> Path:
    return Path(str(resources.files("keepa_ops"))).resolve()


def notebook(step: str) -> Path:
    """The shipped notebook of ``step`` (one of ``STEPS``)."""
    return _root() / "reports" / "notebooks" / f"{step}.ipynb"


def data(name: str) -> Path:
    """A shipped file or folder: ``sample_logs``, ``seed_incident.yaml``, ``pipeline_grid.yaml``, ..."""
    path = _root() / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"keepa-ops ships no {name!r} (in {path.parent})")
    return path


def scratch(step: str) -> Path:
    """Where a notebook run by hand writes when it is given no ``output_dir``: a folder of the
    system's temporary directory (``KEEPA_OPS_SCRATCH`` overrides it), never the package's."""
    base = Path(os.environ.get("KEEPA_OPS_SCRATCH") or Path(tempfile.gettempdir()) / "keepa-ops-scratch")
    return (base / step).resolve()


def output_dir(step: str, given: str | None) -> Path:
    """A notebook's output folder: ``given`` (absolute), else ``scratch(step)``; created."""
    out = Path(given).resolve() if given else scratch(step)
    out.mkdir(parents=True, exist_ok=True)
    return out
