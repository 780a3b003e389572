"""Progress on long CLI work: the library reports each day, chunk, batch and epoch to a callback; the bar draws
on stderr only when it is a terminal (CliRunner's and pytest's streams are not), and always when asked."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys import cli
from recsys.config import Settings
from recsys.ingest.extract import backfill
from recsys.progress import progress_bar
from recsys.sources.movielens import import_movielens

runner = CliRunner()
BAR = "━"  # rich's bar glyph


def test_a_bar_draws_nothing_off_a_terminal_and_counts_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("quiet", 3) as advance:
        for _ in range(3):
            advance()
    assert capsys.readouterr() == ("", "")

    with progress_bar("loud (days)", 3, show=True) as advance:
        advance()
        advance(2, description="loud (days), done")
    out, err = capsys.readouterr()
    assert out == "" and "loud (days), done" in err and "3/3" in err and BAR in err


def test_backfill_help_keeps_its_interval() -> None:
    result = runner.invoke(cli.app, ["backfill", "--help"])

    assert result.exit_code == 0
    assert "Run the features of every day in [start, end]" in " ".join(result.output.split())


@pytest.fixture
def site(settings: Settings) -> Settings:
    """Three simulated days (2026-11-01..03) in the embedded SQLite source."""
    from recsys.sources.simulator import SimulationConfig, simulate
    from recsys.sources.writer import write_site

    config = SimulationConfig(seed=1, start=datetime(2026, 11, 1), days=3, n_users=8, initial_items=20)
    write_site(settings, simulate(config))
    return settings


def test_backfill_reports_every_day_extracted_or_skipped(site: Settings) -> None:
    first = []
    backfill(site, date(2026, 11, 1), date(2026, 11, 2), progress=first.append)
    again = []
    results = backfill(site, date(2026, 11, 1), date(2026, 11, 3), progress=again.append)

    assert first == [1, 1]
    assert again == [1, 1, 1]  # two skipped, one extracted
    assert {r.partition.parent.name for r in results} == {"dt=2026-11-03"}


@pytest.mark.slow
def test_the_backfill_command_stays_plain_text_off_a_terminal(
    site: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fixtures_bert import write_tiny_bert

    monkeypatch.setenv("RECSYS_HOME", str(site.home))
    monkeypatch.setenv("RECSYS_MODEL__BERT_CHECKPOINT", str(write_tiny_bert(tmp_path / "bert")))

    result = runner.invoke(cli.app, ["backfill", "--start", "2026-11-01", "--end", "2026-11-01"])
    again = runner.invoke(cli.app, ["backfill", "--start", "2026-11-01", "--end", "2026-11-01"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "2026-11-01: features done"  # after dbt's own log lines
    assert again.output == "2026-11-01: already done, skipped\n"
    assert BAR not in result.output + again.output


def _tiny_movielens(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Heat (1995),Action|Crime\n2,Up (2009),Animation\n")
    ratings = [(1, 1, 4.0, 1700000000), (1, 2, 3.5, 1700000100), (2, 1, 5.0, 1700003600), (3, 2, 2.0, 1700007200),
               (3, 1, 1.0, 1700010800)]  # fmt: skip
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in ratings)
    )
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,heist,1700000200\n")
    return folder


def test_import_movielens_reports_each_chunk_of_events(settings: Settings, tmp_path: Path) -> None:
    chunks: list[int] = []

    result = import_movielens(settings, _tiny_movielens(tmp_path / "ml"), chunksize=2, progress=chunks.append)

    assert chunks == [2, 2, 1, 1]  # ratings in chunks of two, then the one tag
    assert result.events == sum(chunks) == 6


def test_encoding_reports_each_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fixtures_bert import write_tiny_bert
    from recsys.model.encoder import load_encoder

    encoder = load_encoder(str(write_tiny_bert(tmp_path / "bert")), max_length=16)
    batches: list[int] = []

    vectors = encoder.encode(["a movie", "a song", "the sea", "a robot", "football"], 2, progress=batches.append)

    assert batches == [1, 1, 1] and vectors.shape == (5, encoder.hidden_dim)
    assert BAR not in capsys.readouterr().err  # the encoder reports; only a caller on a terminal draws


def _fit(callback: Any, epochs: int) -> None:
    import keras

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(8, dtype="float32").reshape(4, 2)
    model.fit(x, x[:, :1], epochs=epochs, verbose=0, callbacks=[callback])


def test_training_draws_one_step_per_epoch_with_its_loss_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    from recsys.model.fit import EpochProgress

    _fit(EpochProgress(), epochs=2)  # stderr is not a terminal: nothing drawn
    assert BAR not in capsys.readouterr().err

    _fit(EpochProgress(show=True), epochs=3)
    err = capsys.readouterr().err
    assert "3/3" in err and "training (epochs), loss " in err
