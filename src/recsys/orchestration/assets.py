"""The Airflow Assets of the workflow, shared by the DAG files (one definition, matched by name).

``FEATURES`` is partitioned by UTC day (key ``YYYY-MM-DD``): ``recsys_features`` emits one event per day it
materialized and checked, and ``recsys_training`` rolls seven of them up into a week.
"""

from __future__ import annotations

from airflow.sdk import Asset

FEATURES = Asset(name="recsys_features", uri="recsys://feast/online/daily", group="recsys")
MODEL = Asset(name="recsys_model", uri="recsys://bentoml/models/recommender", group="recsys")
BENTO = Asset(name="recsys_bento", uri="recsys://bentoml/bentos/recommender", group="recsys")
