import os
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys.config import Settings, project_dir
from recsys.errors import SourceUnavailableError
from recsys.ingest.extract import extract_interval
from recsys.lake import day_interval
from recsys.sources.movielens import import_movielens

# $RECSYS_MOVIELENS_DIR (as the bench reads it), else ../shared beside the checkout, else the machine's copy.
_CANDIDATES = [Path(p) for p in (os.environ.get("RECSYS_MOVIELENS_DIR"),) if p] + [
    project_dir().parent / "shared" / "data" / "movielens-small",
    Path("/work/shared/data/movielens-small"),
]
ML_SMALL = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    if not ML_SMALL.is_dir():
        pytest.skip(f"MovieLens data not found at any of {[str(p) for p in _CANDIDATES]}: set RECSYS_MOVIELENS_DIR")
    settings = Settings(home=tmp_path_factory.mktemp("ml"))
    result = import_movielens(settings, ML_SMALL)
    assert (result.users, result.items, result.events) == (610, 9742, 100_836 + 3_683)
    return settings


def test_ratings_become_rating_events_on_their_day(imported: Settings) -> None:
    # ratings.csv: user 1 rated 231 of their 232 movies on 2000-07-30 (UTC).
    start, end = day_interval(date(2000, 7, 30))
    events = pq.read_table(extract_interval(imported, "events", start, end).partition).to_pandas()
    user1 = events[(events.user_id == 1) & (events.event_type == "rating")]
    assert len(user1) == 231
    assert user1["value"].between(0.5, 5.0).all()


def test_items_carry_title_genres_and_tags(imported: Settings) -> None:
    start, end = day_interval(date(1996, 4, 12))
    items = pq.read_table(extract_interval(imported, "items", start, end).partition).to_pandas().set_index("item_id")
    toy_story = items.loc[1]
    assert toy_story["title"] == "Toy Story (1995)"
    assert list(toy_story["tags"]) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert "pixar" in toy_story["body"]


def test_second_import_needs_replace(imported: Settings) -> None:
    with pytest.raises(SourceUnavailableError, match="--replace"):
        import_movielens(imported, ML_SMALL)


def test_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(SourceUnavailableError, match=r"movies\.csv"):
        import_movielens(Settings(home=tmp_path / "h"), tmp_path)
