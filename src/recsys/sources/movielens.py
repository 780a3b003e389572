"""Import a MovieLens release (ml-latest-small format: ratings.csv, tags.csv, movies.csv) into the sources.

Ratings become ``rating`` events (``value`` = stars), tags become ``tag`` events; movies become items
(title, genres as category and tags, the most used user tags in the body). Users and items get
``created_at``/``updated_at`` from their first interaction, so interval extraction sees each one on the day
it first appears. CSVs are read in chunks, so a larger release (ml-25m) imports in bounded memory.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recsys.errors import SourceUnavailableError
from recsys.sources import mongo
from recsys.sources.db import init_schema, source_engine
from recsys.sources.schema import TABLES

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.progress import Progress

log = logging.getLogger(__name__)
REQUIRED = {
    "ratings.csv": {"userId", "movieId", "rating", "timestamp"},
    "movies.csv": {"movieId", "title", "genres"},
    "tags.csv": {"userId", "movieId", "tag", "timestamp"},
}


@dataclass(frozen=True)
class ImportResult:
    users: int
    items: int
    events: int


def check_release(folder: Path) -> None:
    """Fail early, naming the file or column that is missing."""
    for name, columns in REQUIRED.items():
        path = folder / name
        if not path.is_file():
            raise SourceUnavailableError(f"{path} is missing: point the importer at a MovieLens release folder.")
        header = set(pd.read_csv(path, nrows=0).columns)
        if missing := columns - header:
            raise SourceUnavailableError(f"{path} lacks columns {sorted(missing)}; is it the ml-latest format?")


def _ts(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds, unit="s")  # naive UTC, as the SQL sources store it


def _event_id(kind: str, frame: pd.DataFrame, extra: pd.Series | None = None) -> pd.Series:
    keys = kind + "-" + frame["userId"].astype(str) + "-" + frame["movieId"].astype(str) + "-"
    keys = keys + frame["timestamp"].astype(str)
    if extra is not None:
        keys = keys + "-" + extra.astype(str)
    return keys.map(lambda k: hashlib.sha1(k.encode()).hexdigest()[:24])


def _rating_events(folder: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    for chunk in pd.read_csv(folder / "ratings.csv", chunksize=chunksize):
        yield pd.DataFrame(
            {
                "event_id": _event_id("rating", chunk),
                "user_id": chunk["userId"].astype("int64"),
                "item_id": chunk["movieId"].astype("int64"),
                "event_type": "rating",
                "value": chunk["rating"].astype("float64"),
                "session_id": None,
                "position": None,
                "occurred_at": _ts(chunk["timestamp"]),
                "received_at": _ts(chunk["timestamp"]),  # the release has one clock
            }
        )


def _tag_events(folder: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    for chunk in pd.read_csv(folder / "tags.csv", chunksize=chunksize, keep_default_na=False):
        yield pd.DataFrame(
            {
                "event_id": _event_id("tag", chunk, chunk["tag"]),
                "user_id": chunk["userId"].astype("int64"),
                "item_id": chunk["movieId"].astype("int64"),
                "event_type": "tag",
                "value": None,
                "session_id": None,
                "position": None,
                "occurred_at": _ts(chunk["timestamp"]),
                "received_at": _ts(chunk["timestamp"]),  # the release has one clock
            }
        )


def _first_seen(folder: Path, key: str, chunksize: int) -> pd.Series:
    firsts = [c.groupby(key)["timestamp"].min() for c in pd.read_csv(folder / "ratings.csv", usecols=[key, "timestamp"],
                                                                     chunksize=chunksize)]  # fmt: skip
    tags = pd.read_csv(folder / "tags.csv", usecols=[key, "timestamp"])
    return pd.concat([*firsts, tags.groupby(key)["timestamp"].min()]).groupby(level=0).min()


def _items(folder: Path, chunksize: int) -> pd.DataFrame:
    movies = pd.read_csv(folder / "movies.csv")
    tags = pd.read_csv(folder / "tags.csv", keep_default_na=False)
    top_tags = (
        tags.assign(tag=tags["tag"].str.strip().str.lower())
        .groupby(["movieId", "tag"]).size().rename("n").reset_index()
        .sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
        .groupby("movieId")["tag"].apply(lambda s: list(s[:10]))
    )  # fmt: skip
    first = _first_seen(folder, "movieId", chunksize)
    fallback = first.min()
    genres = movies["genres"].replace("(no genres listed)", "").str.split("|")
    genres = genres.map(lambda g: [x for x in g if x])
    seen = _ts(movies["movieId"].map(first).fillna(fallback))
    body = movies["movieId"].map(top_tags).map(lambda t: " ".join(t) if isinstance(t, list) else "")
    return pd.DataFrame(
        {
            "item_id": movies["movieId"].astype("int64"),
            "title": movies["title"],
            "body": body,
            "category": genres.map(lambda g: g[0] if g else "unknown"),
            "tags": genres,
            "published_at": seen,
            "updated_at": seen,
        }
    )


def _users(folder: Path, chunksize: int) -> pd.DataFrame:
    first = _first_seen(folder, "userId", chunksize)
    at = _ts(first)
    return pd.DataFrame(
        {"user_id": first.index.astype("int64"), "created_at": at.values, "country": None, "age_band": None,
         "updated_at": at.values}
    )  # fmt: skip


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    frame = frame.astype(object).where(frame.notna(), None)
    records = frame.to_dict("records")
    for r in records:
        for key, value in r.items():
            if isinstance(value, pd.Timestamp):
                r[key] = value.to_pydatetime()
    return records


def import_movielens(
    settings: Settings,
    folder: Path,
    chunksize: int = 100_000,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Load a MovieLens release into the configured sources; refuses non-empty tables unless ``replace``.

    ``progress(rows)`` is called after each chunk of events (ratings, then tags) is inserted.
    """
    from sqlalchemy import func, select

    folder = Path(folder)
    check_release(folder)
    engine = source_engine(settings)
    init_schema(engine)
    users, items = _users(folder, chunksize), _items(folder, chunksize)
    n_events = 0
    sql_tables = ["users", "events"] + (["items"] if settings.items_source == "sql" else [])
    with engine.begin() as conn:
        for name in sql_tables:
            count = conn.execute(select(func.count()).select_from(TABLES[name])).scalar_one()
            if count and not replace:
                raise SourceUnavailableError(f"source table {name} holds {count} rows; pass --replace to overwrite.")
            conn.execute(TABLES[name].delete())
        conn.execute(TABLES["users"].insert(), _records(users))
        if settings.items_source == "sql":
            conn.execute(TABLES["items"].insert(), _records(items))
        for chunk in chain(_rating_events(folder, chunksize), _tag_events(folder, chunksize)):
            conn.execute(TABLES["events"].insert(), _records(chunk))
            n_events += len(chunk)
            log.info("imported %d events", n_events)
            if progress is not None:
                progress(len(chunk))
    engine.dispose()
    if settings.items_source == "mongo":
        db = mongo.mongo_database(settings)
        mongo.init_collections(db)
        if replace:
            db.items.delete_many({})
        mongo.upsert_items(db, _records(items))
        db.client.close()
    return ImportResult(users=len(users), items=len(items), events=n_events)
