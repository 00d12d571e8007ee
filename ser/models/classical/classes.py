"""Class order of classical models' scores: columns re-ordered to the order a caller wants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def aligned_proba(proba: np.ndarray, have: Sequence[Any], want: Sequence[Any], *,
                   fill: float = 0.0) -> np.ndarray:
    """Scores re-ordered to ``want`` (classes absent from ``have`` get ``fill``)."""
    out = np.full((len(proba), len(want)), fill, dtype=np.float64)
    pos = {c: j for j, c in enumerate(want)}
    for j, c in enumerate(have):
        out[:, pos[c]] = proba[:, j]
    return out
