from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture
def seed_raw():
    """The 2026-02-04 incident before the fix (data/seed_incident.yaml), as a mapping (tests mutate copies)."""
    return yaml.safe_load((DATA / "seed_incident.yaml").read_text())
