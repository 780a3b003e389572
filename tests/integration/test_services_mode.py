"""Services mode end to end: both DAGs over MariaDB (events), a MongoDB-wire server (items), the Postgres warehouse
and offline store, the Redis online store and Postgres Airflow metadata, ending in a deployed bento that answers
from Redis.

Configuration only (``RECSYS_*`` and ``AIRFLOW__*`` environment variables): the same DAG files and stage
functions as the embedded mode. The first days go through the gated stage functions in this process (what
``recsys backfill`` runs); the features DAG runs for the last day and the training DAG for the week.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from recsys.config import Settings
from recsys.orchestration.local import task_states
from recsys.registry.production import production_bento
from recsys.sources.simulator import simulate
from recsys.transform.warehouse import read_mart
from servers import fresh_postgres_database
from serving_fixtures import RedisServer
from week_runs import CFG, K, run_the_week, small_model_env

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def services_run(
    tmp_path_factory: pytest.TempPathFactory, mariadb_server_url: str, mongo_url: str
) -> Iterator[tuple[Settings, RedisServer]]:
    from sqlalchemy import create_engine, text

    tmp = tmp_path_factory.mktemp("services")
    source_db = f"recsys_services_{uuid.uuid4().hex[:8]}"
    engine = create_engine(mariadb_server_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {source_db} CHARACTER SET utf8mb4"))
    online = RedisServer()
    online.start()
    mp = pytest.MonkeyPatch()
    try:
        with fresh_postgres_database("recsys_wh") as warehouse, fresh_postgres_database("recsys_af") as metadata:
            env = {
                "RECSYS_HOME": str(tmp / "home"),
                "RECSYS_SOURCE_URL": f"{mariadb_server_url}/{source_db}?charset=utf8mb4",
                "RECSYS_ITEMS_SOURCE": "mongo",
                "RECSYS_MONGO_URL": mongo_url,
                "RECSYS_MONGO_DB": source_db,
                "RECSYS_WAREHOUSE__TARGET": "postgres",
                "RECSYS_WAREHOUSE__POSTGRES": json.dumps({"dbname": warehouse}),
                "RECSYS_ONLINE_STORE": "redis",
                "RECSYS_REDIS_URL": online.url,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata}",
                **small_model_env(tmp),
            }
            for key, value in env.items():
                mp.setenv(key, value)
            settings = Settings()
            run_the_week(settings)
            yield settings, online
    finally:
        mp.undo()
        online.stop()
        with engine.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {source_db}"))
        engine.dispose()


def test_both_dags_succeed_on_the_services(services_run: tuple[Settings, RedisServer]) -> None:
    settings, _ = services_run
    assert set(task_states(settings, "recsys_features").values()) == {"success"}
    assert set(task_states(settings, "recsys_training").values()) == {"success"}
    assert settings.warehouse.target == "postgres" and not settings.marts.exists()  # the marts are in Postgres
    assert len(read_mart(settings, "item_texts")) == len(simulate(CFG).items)  # every item came from MongoDB


def test_the_deployed_bento_answers_from_redis(services_run: tuple[Settings, RedisServer]) -> None:
    from recsys.demo import query_bento

    settings, online = services_run
    assert production_bento(settings) is not None
    assert redis.Redis(host="127.0.0.1", port=online.port).dbsize() > 0  # Feast materialized into this Redis
    answers = {a["user_id"]: a for a in query_bento(settings, [1, 10_000_000], k=K, port=0)}
    assert answers[1]["fallback"] is False and answers[1]["degraded"] is False  # the model, from Redis rows
    assert len(answers[1]["items"]) == K
    assert answers[10_000_000]["fallback"] is True and answers[10_000_000]["degraded"] is False
