"""Training entry point: YAML config + data interval -> ``recsys.pipeline`` train and evaluate stages.

    uv run python training/train.py --config training/configs/default.yaml --end 2024-03-01

The YAML holds the fields of ``recsys.config.ModelSettings``; they replace the model section of the
process settings (``RECSYS_*`` env vars / ``RECSYS_CONFIG``), which still supply every path and connection.
The data interval is ``[--start, --end)`` (``--start`` defaults to one day before ``--end``; naive times are
UTC). ``recsys.pipeline.training_set_stage`` (the Feast point-in-time training set), ``train_stage`` (train ->
export) and ``evaluate_stage`` (the evaluation on the time-based holdout, written into the manifest) do the
work, so this script, the Airflow training DAG and the CLI run the same code.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from recsys import lake
from recsys.config import ModelSettings, Settings, get_settings
from recsys.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


def load_model_settings(path: Path) -> ModelSettings:
    """Parse a training config YAML into ``ModelSettings``; unknown keys are an error, not ignored."""
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist: pass --config with a YAML file.")
    raw: Any = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"training config {path} must be a mapping of ModelSettings fields.")
    unknown = sorted(set(raw) - set(ModelSettings.model_fields))
    if unknown:
        raise ConfigError(
            f"training config {path} has unknown keys {unknown}; allowed: {sorted(ModelSettings.model_fields)}."
        )
    return ModelSettings(**raw)


def settings_for(path: Path) -> Settings:
    """The process settings with their model section replaced by the YAML at ``path``."""
    return get_settings().model_copy(update={"model": load_model_settings(path)})


def utc_time(text: str) -> datetime:
    """An ISO date/time argument as an aware UTC datetime (naive input is taken as UTC)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date/time such as 2024-03-01") from exc
    return lake.utc(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="ModelSettings YAML")
    parser.add_argument("--end", type=utc_time, required=True, help="data interval end (exclusive), ISO")
    parser.add_argument("--start", type=utc_time, default=None, help="data interval start (default: end - 1 day)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.start is None:
        args.start = args.end - timedelta(days=1)
    if args.start >= args.end:
        parser.error(f"--start {args.start:%Y-%m-%d %H:%M} must be before --end {args.end:%Y-%m-%d %H:%M}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Train and evaluate one data interval; prints the stage summaries as JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recsys.pipeline import evaluate_stage, train_stage, training_set_stage

    settings = settings_for(args.config)
    training_set_stage(settings, args.start, args.end)
    trained = train_stage(settings, args.start, args.end)
    metrics = evaluate_stage(settings, args.start)
    print(json.dumps({"train": trained, "metrics": metrics}, indent=2, default=str))


if __name__ == "__main__":
    main()
