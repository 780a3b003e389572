"""One exception hierarchy; every message says what is wrong and what to do next."""


class RecsysError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RecsysError):
    """Settings are missing or inconsistent."""


class IntervalError(ConfigError, ValueError):
    """A data interval is empty or inverted (its end must be after its start)."""


class SourceUnavailableError(RecsysError):
    """A source database could not be reached after bounded retries."""


class ExtractError(RecsysError):
    """Extraction of a data interval failed; no partition was written."""


class ValidationFailedError(RecsysError):
    """A data quality gate failed; the pipeline stops here."""


class TransformError(RecsysError):
    """dbt build failed, or the warehouse could not be loaded or read."""


class MissingMartError(TransformError):
    """A mart the caller needs has not been built in the configured warehouse."""


class FeatureStoreError(RecsysError):
    """Feast apply, materialization or retrieval failed."""


class DagRunFailed(RecsysError):
    """An Airflow DAG run failed; ``failed`` names the tasks that failed, ``not_run`` those they held back."""

    def __init__(self, message: str, failed: list[str] | None = None, not_run: list[str] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []
        self.not_run = not_run or []


class TrainingError(RecsysError):
    """The training set or the training run is unusable."""


class RegistryError(RecsysError):
    """The model store or bento build failed, or no model is registered."""


class ArtifactError(RecsysError, ValueError):
    """A model artifact is missing files or holds an unusable manifest, tower or item matrix."""


class InvalidRequest(RecsysError, ValueError):
    """A recommendation request is malformed (k out of range, an id outside int64, wrong feature count, ...)."""


class ServingError(RecsysError):
    """A service did not start or bind, or a request to it failed (``status_code`` set for HTTP errors)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class UnsupportedLayer(RecsysError):
    """The numpy user tower does not implement a layer (scoring falls back to the compiled TensorFlow function)."""


class UnsupportedFeatureLayout(RecsysError):
    """A feature service's online rows have a layout the lean readers do not decode (the Feast SDK reads them)."""


class FreshnessError(RecsysError):
    """A feature view's newest online materialization is older than its freshness SLA (or never happened)."""


class InfraValidationError(RegistryError):
    """A new bento failed a check of its infra validation (served on a free port before deploy), or it was not
    validated; ``check`` names the check, ``summary`` is the validation record (None when there is none)."""

    def __init__(self, message: str, check: str, summary: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.check = check
        self.summary = summary
