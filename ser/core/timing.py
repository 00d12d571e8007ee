"""Step timings: seconds per named step, added up in a mapping the caller passes as
``timings=`` (``None``: nothing is recorded)."""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping


def tick(timings: MutableMapping[str, float] | None, key: str, t0: float) -> float:
    """Add ``now - t0`` seconds to ``timings[key]``; return now."""
    now = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (now - t0)
    return now


def add(timings: MutableMapping[str, float] | None, more: Mapping[str, float]) -> None:
    """Add the seconds of ``more`` (e.g. a worker process's timings) to ``timings``."""
    if timings is not None:
        for k, v in more.items():
            timings[k] = timings.get(k, 0.0) + v
