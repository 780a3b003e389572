"""Progress bars for long work: on stderr, and only when stderr is a terminal.

Library functions take an optional ``progress`` callback, called with how much was done (``progress(1)`` per
day, batch or epoch, ``progress(rows)`` per chunk), and never draw anything themselves; the caller that owns the
terminal (the CLI, or a stage run by hand) wraps the work in :func:`progress_bar` and passes what it yields. When
stderr is not a terminal (Airflow task logs, CI, pytest) the bar is a no-op, so logs stay plain text.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

Progress = Callable[[int], object]  # what a library function accepts: called with the amount just done


class Advance(Protocol):
    """What :func:`progress_bar` yields: advance the bar by ``n``, optionally with a new description."""

    def __call__(self, n: int = 1, description: str | None = None) -> None:
        """Move the bar ``n`` steps forward."""
        ...


def _ignore(n: int = 1, description: str | None = None) -> None:
    """The no-op bar (stderr is not a terminal)."""


def on_terminal() -> bool:
    """Whether stderr is an interactive terminal (where a bar is drawn by default)."""
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None = None, *, show: bool | None = None) -> Iterator[Advance]:
    """A rich progress bar on stderr for the ``with`` block; yields ``advance(n=1, description=None)``.

    ``total``: steps expected (None: unknown, the bar counts). ``show``: None draws it only on a terminal,
    True always (a final line when stderr is not a terminal), False never.
    """
    if not (on_terminal() if show is None else show):
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1, description: str | None = None) -> None:
            if description is None:
                bar.advance(task, n)
            else:
                bar.update(task, advance=n, description=description)

        yield advance
