from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture
def seed_raw():
    """The 2026-02-04 incident before the fix (data/seed_incident.yaml), as a mapping (tests mutate copies)."""
    return yaml.safe_load((DATA / "seed_incident.yaml").read_text())


@pytest.fixture
def redis_server(tmp_path):
    """A real Redis on a free port for one test (see tests/redis_server.py)."""
    from tests.redis_server import RedisServer
    server = RedisServer(tmp_path)
    yield server
    server.stop()
