"""Starting the online recommender: load the model, bind it to the online store, refuse a bad binding.

At start the service checks that the Feast registry serves the model's feature service with every feature the
model reads, and that the newest materialization of that service's views reaches the model's data interval
end minus ``serving.max_staleness``. Otherwise it refuses to start with an error that says what to run, unless
``serving.degraded_ok`` is set: then it starts, answers from the fallback (``degraded: true``) and re-checks the
binding every 30 s, answering from the model once the store serves it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys import lake
from recsys.config import Settings
from recsys.errors import ServingError
from recsys.serving.breaker import CircuitBreaker
from recsys.serving.features import default_feature_service
from recsys.serving.recommender import Recommender
from recsys.serving.runtime import OnlineRecommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Binding:
    """What the service is bound to, and what is wrong with it (empty ``problems``: bound)."""

    model_version: str
    feature_service: str
    data_interval_end: str | None
    catalog_fingerprint: str
    newest_materialization: str | None
    problems: list[str] = field(default_factory=list)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    return lake.utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def check_binding(
    settings: Settings, recommender: Recommender, feature_service: str, store: Any | None = None
) -> Binding:
    """Check the model against the Feast registry and its materializations (see the module docstring);
    ``store``: a FeatureStore already built from ``settings`` (else one is built, reading the registry anew)."""
    from recsys.features.store import feature_store, materialized_until

    problems: list[str] = []
    interval_end = _utc(recommender.manifest.get("data_interval_end"))
    newest: datetime | None = None
    try:
        store = store or feature_store(settings)
        service = store.get_feature_service(feature_service)
        served = {f.name for projection in service.feature_view_projections for f in projection.features}
        missing = [name for name in recommender.feature_names if name not in served]
        if missing:
            problems.append(
                f"feature service {feature_service} lacks {missing}, which model {recommender.model_version} reads: "
                "apply the feature repo this model was trained with (recsys run), or deploy a matching bento."
            )
        ends = list(materialized_until(store, [p.name for p in service.feature_view_projections]).values())
        if ends and all(e is not None for e in ends):
            newest = min(e for e in ends if e is not None)  # the stalest view bounds the service
    except Exception as exc:  # registry missing or unreadable, service not applied
        problems.append(
            f"the Feast registry {settings.feast_registry} does not serve {feature_service}: {exc}. "
            "Run the features DAG (recsys run --day DAY) to apply and materialize it."
        )
    if interval_end is not None and not problems:
        required = interval_end - settings.serving.max_staleness
        if newest is None or newest < required:
            problems.append(
                f"the online store's newest materialization of {feature_service} is {newest or 'never'}, older than "
                f"the model's data interval end {interval_end.isoformat()} minus max_staleness "
                f"{settings.serving.max_staleness}: materialize it (recsys run --day DAY), or start with "
                "RECSYS_SERVING__DEGRADED_OK=true to serve the fallback until it is."
            )
    return Binding(
        recommender.model_version,
        feature_service,
        interval_end.isoformat() if interval_end else None,
        recommender.artifact.catalog_fingerprint,
        newest.isoformat() if newest else None,
        problems,
    )


def api_key(settings: Settings) -> str | None:
    """The configured API key (``serving.api_key``, else the contents of ``serving.api_key_file``)."""
    if settings.serving.api_key is not None:
        return settings.serving.api_key.get_secret_value() or None
    if settings.serving.api_key_file is not None:
        path = Path(settings.serving.api_key_file)
        try:
            return path.read_text().strip() or None
        except OSError as exc:
            raise ServingError(f"cannot read the API key file {path}: {exc}. Mount the secret or unset it.") from exc
    return None


def pin_blas_threads() -> None:
    """One BLAS thread per serving worker: more oversubscribe the cores as soon as anything else runs."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with the environment
        log.warning("threadpoolctl is missing: BLAS may use every core per request")


def start_runtime(settings: Settings, artifact_dir: Path, model_version: str) -> OnlineRecommender:
    """Load, bind and return the online recommender; ServingError on a bad binding (unless degraded_ok)."""
    from recsys.errors import FeatureStoreError
    from recsys.features.store import feature_store
    from recsys.serving.online import open_online_rows

    pin_blas_threads()
    recommender = Recommender(artifact_dir, model_version=model_version)
    feature_service = recommender.feature_service or default_feature_service(settings)
    try:
        store = feature_store(settings)  # built once: the binding check and the online reader share it
    except FeatureStoreError:
        store = None  # check_binding reports it
    binding = check_binding(settings, recommender, feature_service, store)
    if binding.problems and not settings.serving.degraded_ok:
        raise ServingError(f"refusing to serve {model_version}: " + " ".join(binding.problems))
    for problem in binding.problems:
        log.warning("serving degraded (degraded_ok is set): %s", problem)
    rows = None
    try:
        rows = open_online_rows(settings, feature_service, recommender.feature_names, store=store)
    except FeatureStoreError as exc:
        if not settings.serving.degraded_ok:
            raise ServingError(f"refusing to serve {model_version}: {exc}") from exc
        log.warning("no online rows (degraded_ok is set): %s", exc)
    breaker = CircuitBreaker(settings.serving.breaker_failures, settings.serving.breaker_reset_s)
    runtime = OnlineRecommender(recommender, rows, breaker, feature_service, api_key(settings))
    runtime.binding = binding
    if binding.problems:  # degraded_ok: the fallback answers until a re-check of the binding passes
        runtime.unbound = list(binding.problems)
        runtime.rebind = lambda: check_binding(settings, recommender, feature_service).problems
    # The model's arrays and Keras objects are ~0.5 M tracked objects: a full collection of them stalls a request
    # for ~360 ms (the serving bench's c16 p99). They live as long as the process: keep them out of the GC.
    gc.collect()
    gc.freeze()
    log.info(
        "serving %s: feature service %s, data interval end %s, catalog %s, store materialized to %s",
        model_version,
        feature_service,
        binding.data_interval_end,
        binding.catalog_fingerprint,
        binding.newest_materialization,
    )
    return runtime
