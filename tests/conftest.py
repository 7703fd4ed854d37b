from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture
def seed_raw():
    """The 2026-02-04 incident before the fix, as a mapping (tests mutate copies)."""
    return {
        "refill_per_minute": 5,
        "start_tokens": 24,
        "refill": "continuous",
        "policy": "threshold",
        "tasks": {
            "update_recent_deals": {"role": "upserter", "every": "60s", "batch_size": 10, "cost_per_item": 20,
                                    "page_cost": 0, "threshold": 50, "priority": 1},
            "backfill_deals": {"role": "backfiller", "every": "continuous", "batch_size": 5, "cost_per_item": 20,
                               "page_cost": 0, "threshold": 80, "priority": 2},
        },
        "workload": {"pending_new_deals": 300, "new_deals_per_hour": 6, "backlog": 10000},
    }
