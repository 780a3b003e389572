"""Stage wall-time records, appended as JSON lines so a demo or bench can report each stage."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def stage(name: str, record_to: Path | None = None, **labels: str) -> Iterator[None]:
    """Time a pipeline stage, log it, and append ``{"stage", "seconds", ...labels}`` to ``record_to``."""
    start = time.perf_counter()
    log.info("stage %s: start", name)
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        log.info("stage %s: %.1f s", name, seconds)
        if record_to is not None:
            record_to.parent.mkdir(parents=True, exist_ok=True)
            with record_to.open("a") as fh:
                fh.write(json.dumps({"stage": name, "seconds": round(seconds, 3), **labels}) + "\n")
