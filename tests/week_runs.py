"""A simulated week through both DAGs, shared by the embedded and the services end-to-end tests.

The site's earlier days go through the gated stage functions in this process (what ``recsys backfill`` runs),
the last day through ``recsys_features`` and the week through ``recsys_training``, both with ``airflow dags
test``: the subprocess rebuilds the settings from the environment the caller set.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from fixtures_bert import write_tiny_bert
from recsys.config import Settings
from recsys.orchestration.local import run_features_day, run_training_week
from recsys.pipeline import backfill_features
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

CFG = SimulationConfig(days=8, n_users=40, initial_items=60, new_items_per_day=5, sessions_per_user_day=2.0)
FIRST, LAST, WEEK = date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 2)  # Sunday 1 .. Sunday 8; Monday 2
K = 5


def small_model_env(folder: Path) -> dict[str, str]:
    """``RECSYS_MODEL__*`` of a tiny, fast model on a seeded tiny BERT checkpoint (no pretrained download)."""
    return {
        "RECSYS_MODEL__BERT_CHECKPOINT": str(write_tiny_bert(folder / "tiny_bert")),
        "RECSYS_MODEL__MAX_LENGTH": "16",
        "RECSYS_MODEL__EPOCHS": "2",
        "RECSYS_MODEL__TOP_K": str(K),
    }


def run_the_week(settings: Settings) -> None:
    """Write the simulated site, then features for every day and training for the week ``WEEK``."""
    write_site(settings, simulate(CFG))
    for _ in backfill_features(settings, FIRST, LAST - timedelta(days=1)):
        pass
    run_features_day(settings, LAST, log_file=settings.home / "features.log")
    run_training_week(settings, WEEK, log_file=settings.home / "training.log")
