"""The dbt project on Spark, by configuration: dbt-spark loads the `spark` target of dbt/profiles.yml from the
settings and parses the project with it (no Spark here: nothing connects, nothing is built)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from recsys.config import Settings
from recsys.transform import dbt


def test_dbt_parses_the_project_on_the_spark_target(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        warehouse={"target": "spark", "spark": {"host": "thrift.example.com", "port": 10001, "user": "etl"}},
    )
    env = dbt.invocation_env(settings, "spark")
    assert {k: v for k, v in env.items() if k.startswith("RECSYS_SPARK_")} == {
        "RECSYS_SPARK_METHOD": "thrift",
        "RECSYS_SPARK_HOST": "thrift.example.com",
        "RECSYS_SPARK_PORT": "10001",
        "RECSYS_SPARK_USER": "etl",
        "RECSYS_SPARK_TOKEN": "",
        "RECSYS_SPARK_CLUSTER": "",
        "RECSYS_SPARK_SCHEMA": "analytics",
    }
    assert dbt.invocation_vars(settings, "spark") == {"recent_items_limit": "10", "raw_schema": "raw"}
    work = tmp_path / "parse"
    with dbt._temporary_env(env):
        outcome = dbt._invoke([*dbt._project_args("parse", "spark", work), "--no-partial-parse", "--quiet"])
    assert outcome.success
    manifest = json.loads((work / "target" / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "spark"
    marts = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert marts["user_daily_features"]["schema"] == "analytics"
    assert marts["user_daily_features"]["config"]["materialized"] == "table"  # not DuckDB's external Parquet
    assert {s["schema"] for s in manifest["sources"].values()} == {"raw"}


def test_the_spark_profile_loads_with_dbt_sparks_credentials(tmp_path: Path) -> None:
    """dbt's own profile loader renders the target with the settings' env and dbt-spark validates it."""
    from dbt.config.profile import Profile, read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    from recsys.transform.dbt_project import dbt_project_dir

    settings = Settings(home=tmp_path, warehouse={"target": "spark", "spark": {"method": "http", "token": "t0k"}})
    raw = read_profile(str(dbt_project_dir()))
    with dbt._temporary_env(dbt.invocation_env(settings, "spark")):
        set_invocation_context(dict(os.environ))  # dbt's env_var() reads this snapshot (dbtRunner takes one per call)
        profile = Profile.from_raw_profiles(raw, "recsys", ProfileRenderer({}), target_override="spark")
    creds = profile.credentials
    assert (type(creds).__name__, creds.method, creds.host, creds.port) == (
        "SparkCredentials",
        "http",
        "spark-thrift.recsys.svc",
        10000,
    )
    assert (creds.schema, creds.token, creds.cluster, creds.connect_retries, profile.threads) == (
        "analytics",
        "t0k",
        "",
        3,
        4,
    )
