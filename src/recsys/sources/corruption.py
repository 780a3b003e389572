"""Injected corruption for the simulator: each kind a real source produces, recorded in a manifest.

Row kinds change the events received on one day; schema kinds change the source table itself (applied by
the writer). The manifest says what was done to which rows, so a test can check that every kind reaches the
raw layer intact and is flagged by the right gate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from recsys.sources.simulator import Site

ROW_KINDS = (
    "null_ids",
    "duplicate_events",
    "future_timestamps",
    "out_of_interval_timestamps",
    "unknown_items",
    "retyped_column",
    "empty_interval",
)
SCHEMA_KINDS = ("renamed_column",)
KINDS = ROW_KINDS + SCHEMA_KINDS
UNKNOWN_ITEM_BASE = 90_000_000
RENAMED = ("session_id", "session_key")
RETYPED_VALUE = "five stars"


@dataclass
class Corruption:
    """One injected kind: where, which events, and what was done."""

    kind: str
    day: str | None
    event_ids: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class CorruptionManifest:
    """Everything injected into one simulated site."""

    seed: int
    entries: list[Corruption] = field(default_factory=list)

    def kinds(self) -> set[str]:
        return {e.kind for e in self.entries}

    def get(self, kind: str) -> Corruption:
        return next(e for e in self.entries if e.kind == kind)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seed": self.seed, "entries": [asdict(e) for e in self.entries]}, indent=1))


def _on_day(site: Site, day: date) -> list[dict[str, Any]]:
    return [e for e in site.events if e["received_at"].date() == day and e["event_type"] != "rating"]


def _null_ids(events: list[dict[str, Any]]) -> str:
    for i, e in enumerate(events):
        e["user_id" if i % 2 == 0 else "item_id"] = None
    return "user_id or item_id set to NULL (alternating)"


def _future(events: list[dict[str, Any]]) -> str:
    for e in events:
        e["occurred_at"] = e["received_at"] + timedelta(days=30)
    return "occurred_at 30 days after received_at (a client clock in the future)"


def _out_of_interval(events: list[dict[str, Any]]) -> str:
    for e in events:
        e["occurred_at"] = e["received_at"] - timedelta(days=10)
    return "occurred_at 10 days before received_at (far outside the interval and any lateness allowance)"


def _unknown_items(events: list[dict[str, Any]]) -> str:
    for i, e in enumerate(events):
        e["item_id"] = UNKNOWN_ITEM_BASE + i
    return f"item_id set to ids >= {UNKNOWN_ITEM_BASE} that no catalog has"


def _retyped(events: list[dict[str, Any]]) -> str:
    # The rows stay numeric in memory; the writer retypes them at the source (see apply_after_insert).
    return f"value (a number) stored as the text {RETYPED_VALUE!r}; on MySQL the column is retyped to VARCHAR first"


ROW_EDITS = {
    "null_ids": _null_ids,
    "future_timestamps": _future,
    "out_of_interval_timestamps": _out_of_interval,
    "unknown_items": _unknown_items,
    "retyped_column": _retyped,
}


def inject(site: Site, kinds: list[str], day: date, per_kind: int = 5, seed: int = 0) -> CorruptionManifest:
    """Corrupt ``site`` in place: ``per_kind`` distinct events of ``day`` for each row kind; returns the manifest."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown corruption kinds {sorted(unknown)}; choose from {list(KINDS)}.")
    manifest = CorruptionManifest(seed=seed)
    pool = _on_day(site, day)
    if len(pool) < per_kind * len(ROW_EDITS):
        raise ValueError(f"only {len(pool)} events received on {day}: simulate more users or days.")
    offset = 0
    for kind in kinds:
        if kind in ROW_EDITS:
            chosen = pool[offset : offset + per_kind]
            offset += per_kind
            detail = ROW_EDITS[kind](chosen)
            manifest.entries.append(Corruption(kind, str(day), [e["event_id"] for e in chosen], detail))
    if "duplicate_events" in kinds:
        originals = pool[offset : offset + per_kind]
        copies = [{**e, "event_id": f"{e['event_id']}-dup"} for e in originals]
        site.events.extend(copies)
        detail = "the same events logged twice under new event_ids (same user, item, type, session, time)"
        manifest.entries.append(Corruption("duplicate_events", str(day), [c["event_id"] for c in copies], detail))
    if "empty_interval" in kinds:
        empty = day + timedelta(days=1)
        removed = [e["event_id"] for e in site.events if e["received_at"].date() == empty]
        site.events[:] = [e for e in site.events if e["received_at"].date() != empty]
        manifest.entries.append(Corruption("empty_interval", str(empty), removed, "every event of the day removed"))
    if "renamed_column" in kinds:
        old, new = RENAMED
        manifest.entries.append(Corruption("renamed_column", None, [], f"events.{old} renamed to {new} at the source"))
    return manifest


def apply_before_insert(conn: Connection, manifest: CorruptionManifest | None) -> None:
    """Schema changes the corrupted rows need to be writable (a strictly typed MySQL column retyped)."""
    if manifest and "retyped_column" in manifest.kinds() and conn.dialect.name in {"mysql", "mariadb"}:
        conn.execute(text("ALTER TABLE events MODIFY value VARCHAR(32) NULL"))


def apply_after_insert(conn: Connection, manifest: CorruptionManifest | None) -> None:
    """Drift at the source: text in the numeric ``value`` column, then a renamed column."""
    if manifest and "retyped_column" in manifest.kinds():
        ids = manifest.get("retyped_column").event_ids
        conn.execute(
            text("UPDATE events SET value = :v WHERE event_id IN :ids").bindparams(bindparam("ids", expanding=True)),
            {"v": RETYPED_VALUE, "ids": ids},
        )
    if manifest and "renamed_column" in manifest.kinds():
        old, new = RENAMED
        if conn.dialect.name in {"mysql", "mariadb"}:
            conn.execute(text(f"ALTER TABLE events CHANGE {old} {new} VARCHAR(64)"))
        else:
            conn.execute(text(f"ALTER TABLE events RENAME COLUMN {old} TO {new}"))
