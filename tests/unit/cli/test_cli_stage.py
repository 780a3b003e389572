"""`recsys stage <task> <day|week>`: one DAG task's stage for its interval (what a Kubernetes pod task runs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import pipeline
from recsys.cli import app


def test_a_stage_runs_for_its_day_and_writes_its_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(settings, start, end):
        calls.append((start, end))
        return {"rows": 3}

    monkeypatch.setitem(pipeline.INTERVAL_STAGES, "encode_items", ("day", fake))
    result_file = tmp_path / "xcom" / "return.json"
    out = CliRunner().invoke(app, ["stage", "encode_items", "2026-11-08", "--result-file", str(result_file)])
    assert out.exit_code == 0, out.output
    assert calls == [(datetime(2026, 11, 8, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC))]
    assert json.loads(result_file.read_text()) == {"rows": 3}
    assert out.output.strip().splitlines()[-1] == '{"rows": 3}'


def test_a_training_stage_takes_a_monday_and_runs_the_week(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setitem(pipeline.INTERVAL_STAGES, "train", ("week", lambda s, a, b: calls.append((a, b)) or {}))
    assert CliRunner().invoke(app, ["stage", "train", "2026-11-02"]).exit_code == 0
    assert calls == [(datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC))]
    tuesday = CliRunner().invoke(app, ["stage", "train", "2026-11-03"])
    assert tuesday.exit_code == 1 and "starts on a Monday" in str(tuesday.exception)


def test_an_unknown_task_is_refused_with_the_known_ones() -> None:
    out = CliRunner().invoke(app, ["stage", "deploy", "2026-11-02"])
    assert out.exit_code == 2
    assert "'deploy' is not one of extract, validate_raw" in out.output
