"""Multiplicity corrections of p-values.

- **FDR** (:func:`bh_fdr`, :func:`add_fdr`): Benjamini–Hochberg across features,
  separately for each analysis × model × term of a ``mixed_models.csv`` table.
- **FWER** (:func:`holm`): Holm's step-down correction, used for the permutation
  p-values of the level classifiers.
- **A pre-specified family** (:func:`adjust_family`): Holm or BH over a family of a
  fixed size, hypotheses without a p-value yet (a stage not run) counting as ``p = 1``;
  used for the primary hypotheses across stages 05-07 (:mod:`ser.stats.primary`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def bh_fdr(p: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values; missing p-values stay missing.

    Args:
        p: p-values (NaN allowed; they are ignored and returned as NaN).

    Returns:
        Array of the same length: ``min(1, min_{j>=i} p_(j) * m / j)`` in the original order,
        with ``m`` the number of non-missing p-values.

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    arr = np.asarray(p, dtype=float)
    out = np.full(arr.shape, np.nan)
    ok = ~np.isnan(arr)
    if np.any((arr[ok] < 0) | (arr[ok] > 1)):
        raise ValueError(f"bh_fdr: p-values must lie in [0, 1], got {arr[ok].min()}..{arr[ok].max()}")
    m = int(ok.sum())
    if m == 0:
        return out
    vals = arr[ok]
    order = np.argsort(vals)
    ranked = vals[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out

def add_fdr(table: pd.DataFrame, *, by: Sequence[str] = ("analysis", "model", "term")) -> pd.DataFrame:
    """Fill ``p_fdr`` with Benjamini–Hochberg adjusted ``p`` within each ``by`` group."""
    out = table.copy()
    out["p_fdr"] = np.nan
    for _, idx in out.groupby(list(by), dropna=False).groups.items():
        out.loc[idx, "p_fdr"] = bh_fdr(out.loc[idx, "p"].to_numpy(float))
    return out


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error rate); missing stay missing.

    Args:
        p: p-values (NaN allowed; they are ignored and returned as NaN).

    Returns:
        Array of the same length: ``min(1, max_{j<=i} p_(j) * (m - j + 1))`` in the
        original order, with ``m`` the number of non-missing p-values.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    vals = p[ok]
    order = np.argsort(vals)
    m = len(vals)
    adj = np.maximum.accumulate(vals[order] * (m - np.arange(m)))
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


#: Multiplicity rules of :func:`adjust_family`.
FAMILY_METHODS: tuple[str, ...] = ("holm", "bh")


def adjust_family(p: Sequence[float] | np.ndarray, *, method: str,
                  family_size: int) -> np.ndarray:
    """Adjust the p-values of a pre-specified family of ``family_size`` hypotheses.

    ``p`` holds the hypotheses tested so far; the others (missing p-values, or a family
    larger than ``len(p)``) count as ``p = 1``, so adding them later can only lower no
    adjusted value: a stage run alone is never more liberal than the whole study.

    Args:
        p: p-values of the hypotheses tested (NaN: not tested).
        method: ``"holm"`` (family-wise error rate) or ``"bh"`` (false-discovery rate).
        family_size: number of hypotheses in the family (at least ``len(p)``).

    Returns:
        Adjusted p-values in the order of ``p`` (NaN where ``p`` is NaN).

    Raises:
        ValueError: unknown method, or ``family_size`` smaller than the p-values given.

    Example:
        >>> adjust_family([0.01, 0.04], method="holm", family_size=4).tolist()
        [0.04, 0.12]
    """
    if method not in FAMILY_METHODS:
        raise ValueError(f"adjust_family: method must be one of {FAMILY_METHODS}, got {method!r}")
    arr = np.asarray(p, dtype=float)
    if int(family_size) < len(arr):
        raise ValueError(f"adjust_family: family_size {family_size} is smaller than the "
                         f"{len(arr)} p-values given")
    padded = np.concatenate([np.where(np.isnan(arr), 1.0, arr),
                             np.ones(int(family_size) - len(arr))])
    adj = holm(padded) if method == "holm" else bh_fdr(padded)
    out = adj[:len(arr)]
    out[np.isnan(arr)] = np.nan
    return out
