"""Multiplicity corrections of p-values.

- **FDR** (:func:`bh_fdr`, :func:`add_fdr`): Benjamini–Hochberg across features,
  separately for each analysis × model × term of a ``mixed_models.csv`` table.
- **FWER** (:func:`holm`): Holm's step-down correction, used for the permutation
  p-values of the level classifiers.
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


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error rate); missing stay missing.

    Args:
        p: p-values (NaN allowed; they are ignored and returned as NaN).

    Returns:
        Array of the same length: ``min(1, max_{j<=i} p_(j) * (m - j + 1))`` in the
        original order, with ``m`` the number of non-missing p-values.
    """
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
