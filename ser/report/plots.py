"""Statistics figures for clinicians: trajectories, descriptors, forest plot, deltas.

Conventions: training levels always in their natural order (untrained → expert) with an
ordered, colour-blind-safe palette (viridis); phases with the Okabe–Ito blue/vermillion
pair; the reader's names with their unit said once, worded as in the report's tables
(:func:`ser.report.names.display_name`, :func:`ser.report.names.term_name`); legends
outside the panels so they never cover data; tick labels at least 9 pt; multi-panel
figures as wide as the report page (:data:`PAGE_WIDTH_IN`); one point per caregiver drawn
over the box summary. Every function returns a :class:`matplotlib.figure.Figure` and
never calls ``plt.show``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ser.data.schema import LEVELS, PHASES
from ser.report.names import display_name, display_scale, feature_name, feature_unit, term_name

#: Ordered, colour-blind-safe colours of the training levels (viridis, light → dark reversed
#: so that "more training" reads as "darker").
LEVEL_PALETTE: dict[str, tuple[float, float, float]] = dict(
    zip(LEVELS, sns.color_palette("viridis", len(LEVELS))[::-1], strict=True))
#: Okabe–Ito colours of the phases.
PHASE_PALETTE: dict[str, str] = {"control": "#0072B2", "care": "#D55E00"}
#: Axis label of the training level.
LEVEL_AXIS = "training level"
#: Width of a multi-panel figure in inches: the report's text column at 100 % zoom.
PAGE_WIDTH_IN: float = 12.0
#: Smallest font size of tick labels (pt), readable at 100 % zoom.
TICK_PT: float = 9.0


def _readable(fig: Figure) -> Figure:
    """Tick labels of every axis at least :data:`TICK_PT`."""
    for ax in fig.axes:
        ax.tick_params(labelsize=max(TICK_PT, 9.0))
    return fig


def _scaled(values: pd.Series | np.ndarray, column: str) -> np.ndarray:
    """Values of ``column`` as the tables show them (fractions in %)."""
    return np.asarray(values, dtype=float) * display_scale(column)


@contextlib.contextmanager
def _quiet_seaborn() -> Iterator[None]:
    """Hide deprecation warnings that seaborn itself triggers in matplotlib (not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="seaborn")
        yield


def _levels_present(values: pd.Series) -> list[str]:
    present = set(values.astype(str))
    return [lv for lv in LEVELS if lv in present]


def _grid(n: int, *, ncols: int, height: float = 3.4,
          sharey: bool = False) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH_IN, height * nrows),
                             squeeze=False, sharey=sharey, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _level_ticks(ax: plt.Axes, counts: pd.Series, levels: Sequence[str]) -> None:
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels([f"{lv}\n(n={int(counts.get(lv, 0))})" for lv in levels])
    ax.set_xlabel(LEVEL_AXIS)


def _check(df: pd.DataFrame, cols: Sequence[str], *, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: table lacks column(s) {missing}")


def plot_trajectories(
    summary: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    min_n_band: int = 3,
) -> Figure:
    """Mean trajectory per training level with its 95 % band; one column per phase.

    Args:
        summary: output of :func:`ser.stats.trajectory.trajectory_summary`.
        features: features to draw (rows), default all in ``summary``.
        min_n_band: levels with fewer caregivers are drawn as a dashed line without a
            band (a t-interval from 2 caregivers is too wide to read; the legend says so).

    Returns:
        Figure with ``len(features)`` rows × (number of phases) columns; y axes shared
        within a row.
    """
    _check(summary, ["feature", "level", "phase", "time", "mean", "ci_low", "ci_high"],
           what="plot_trajectories")
    feats = list(features) if features is not None else list(dict.fromkeys(summary["feature"]))
    if not feats:
        raise ValueError("plot_trajectories: no features to draw")
    phases = [p for p in PHASES if p in set(summary["phase"])]
    levels = _levels_present(summary["level"])
    unit = str(summary["time_unit"].iloc[0]) if "time_unit" in summary else ""
    fig, axes = plt.subplots(len(feats), len(phases), figsize=(PAGE_WIDTH_IN, 2.8 * len(feats)),
                             squeeze=False, sharex=True, layout="constrained")
    for i, f in enumerate(feats):
        sub = summary[summary["feature"] == f]
        if sub.empty:
            raise ValueError(f"plot_trajectories: feature {f!r} not in the summary")
        for j, ph in enumerate(phases):
            ax = axes[i, j]
            if j:
                ax.sharey(axes[i, 0])
            for lv in levels:
                s = sub[(sub["phase"] == ph) & (sub["level"] == lv)].sort_values("time")
                if s.empty:
                    continue
                n = int(s["n_caregivers"].max()) if "n_caregivers" in s else 0
                band = n >= min_n_band
                k = display_scale(f)
                ax.plot(s["time"], s["mean"] * k, color=LEVEL_PALETTE[lv], lw=1.8,
                        ls="-" if band else "--",
                        label=f"{lv} (n={n}{'' if band else ', no band'})")
                if band:
                    ax.fill_between(s["time"], s["ci_low"] * k, s["ci_high"] * k,
                                    color=LEVEL_PALETTE[lv], alpha=0.18, lw=0)
            if i == 0:
                ax.set_title(f"{ph} phase", fontsize=11)
            ax.set_ylabel(display_name(f) if j == 0 else "")
            if i == len(feats) - 1:
                ax.set_xlabel(f"time ({unit})" if unit else "time")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, title=LEVEL_AXIS, loc="outside upper center",
                   ncols=len(handles), frameon=False)
    return _readable(fig)


def plot_descriptors(
    descriptors: pd.DataFrame,
    *,
    features: Sequence[str],
    ncols: int = 3,
) -> Figure:
    """Box summary by level × phase with one point per caregiver and phase.

    Segments (if any) are averaged per recording first, so each caregiver contributes
    one point per phase.

    Args:
        descriptors: descriptor table (``descriptors.csv``).
        features: descriptor columns, one panel each.
        ncols: panels per row.

    Returns:
        The figure.
    """
    _check(descriptors, ["caregiver", "level", "phase", *features], what="plot_descriptors")
    if not features:
        raise ValueError("plot_descriptors: no features to draw")
    per = (descriptors.groupby(["caregiver", "level", "phase"], as_index=False, observed=True)
           [list(features)].mean())
    for f in features:
        per[f] = _scaled(per[f], f)
    levels = _levels_present(per["level"])
    phases = [p for p in PHASES if p in set(per["phase"])]
    counts = per.groupby("level")["caregiver"].nunique()
    fig, axes = _grid(len(features), ncols=ncols)
    for ax, f in zip(axes.flat, features, strict=False):
        kw = dict(data=per, x="level", y=f, hue="phase", order=levels, hue_order=phases, ax=ax)
        with _quiet_seaborn():
            sns.boxplot(**kw, palette=PHASE_PALETTE, showfliers=False, fill=False, width=0.7,
                        legend=False)
        sns.stripplot(**kw, palette=PHASE_PALETTE, dodge=True, size=4.5, alpha=0.8,
                      jitter=0.12, legend=ax is axes.flat[0])
        _level_ticks(ax, counts, levels)
        ax.set_ylabel(display_name(f))
        ax.grid(axis="y", alpha=0.3)
    leg = axes.flat[0].get_legend()
    if leg is not None:  # above the panels, never over the points
        handles, labels = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
        leg.remove()
        fig.legend(handles, labels, title="phase (1 point = 1 caregiver)",
                   loc="outside upper center", ncols=len(labels), frameon=False)
    return _readable(fig)


def plot_forest(
    table: pd.DataFrame,
    *,
    model: str | None = None,
    features: Sequence[str] | None = None,
    terms: Sequence[str] | None = None,
    alpha: float = 0.05,
    ncols: int = 2,
) -> Figure:
    """Forest plot of mixed-model estimates with 95 % CIs, one panel per feature.

    Each panel has its own x scale in the feature's unit. Filled markers: ``p_fdr <
    alpha``; hollow: not significant after FDR. The intercept and omnibus rows (no
    estimate) are left out.

    Args:
        table: rows of ``mixed_models.csv``.
        model: keep only this ``model`` (e.g. ``"level_trend"``).
        features: features to show (default: all in ``table``).
        terms: terms to show, top to bottom (default: all estimated non-intercept terms).
        alpha: FDR threshold for filled markers.
        ncols: panels per row.

    Returns:
        The figure.
    """
    _check(table, ["feature", "model", "term", "estimate", "ci_low", "ci_high", "p_fdr"],
           what="plot_forest")
    t = table[(table["term"] != "Intercept") & table["estimate"].notna()]
    if model is not None:
        t = t[t["model"] == model]
    feats = list(features) if features is not None else list(dict.fromkeys(t["feature"]))
    t = t[t["feature"].isin(feats)]
    if t.empty:
        raise ValueError(f"plot_forest: no estimated terms for model={model!r}, features={feats}")
    order = list(terms) if terms is not None else list(dict.fromkeys(t["term"]))
    fig, axes = _grid(len(feats), ncols=ncols, height=0.5 * len(order) + 1.5)
    for ax, f in zip(axes.flat, feats, strict=False):
        s = t[t["feature"] == f].set_index("term").reindex(order)
        y = np.arange(len(order))[::-1]
        sig = (s["p_fdr"] < alpha).to_numpy()
        est, lo, hi = (_scaled(s[c], f) for c in ("estimate", "ci_low", "ci_high"))
        ax.hlines(y, lo, hi, color="0.3", lw=1.5)
        ax.scatter(est[sig], y[sig], color="#D55E00", zorder=3, s=36,
                   label=f"clear evidence (FDR p < {alpha})")
        ax.scatter(est[~sig], y[~sig], facecolor="white", edgecolor="0.2",
                   zorder=3, s=36, label="no clear evidence")
        ax.axvline(0, color="0.5", ls="--", lw=1)
        ax.set_yticks(y)
        ax.set_yticklabels([term_name(term) for term in order])
        ax.set_xlabel("estimate with 95 % CI")
        ax.set_title(display_name(f), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False)
    return _readable(fig)


def plot_delta(
    delta: pd.DataFrame,
    *,
    features: Sequence[str],
    value: str = "delta_abs",
    ncols: int = 3,
) -> Figure:
    """Per-caregiver change care − control by training level (box + one point each).

    Args:
        delta: output of :func:`ser.stats.deltas.delta_table` (rows with ``status == "ok"`` are
            used; segments averaged per caregiver).
        features: descriptors, one panel each.
        value: ``"delta_abs"`` (feature unit) or ``"delta_rel"`` (relative change).
        ncols: panels per row.

    Returns:
        The figure; a dashed line marks no change.
    """
    if value not in ("delta_abs", "delta_rel"):
        raise ValueError(f"plot_delta: value must be 'delta_abs' or 'delta_rel', got {value!r}")
    _check(delta, ["caregiver", "level", "feature", "status", value], what="plot_delta")
    if not features:
        raise ValueError("plot_delta: no features to draw")
    ok = delta[(delta["status"] == "ok") & delta["feature"].isin(features)]
    per = ok.groupby(["feature", "caregiver", "level"], as_index=False)[value].mean()
    if value == "delta_abs":
        for f in features:
            rows = per["feature"] == f
            per.loc[rows, value] = _scaled(per.loc[rows, value], f)
    levels = [lv for lv in LEVELS if lv in set(delta["level"].astype(str))]
    fig, axes = _grid(len(features), ncols=ncols)
    for ax, f in zip(axes.flat, features, strict=False):
        s = per[per["feature"] == f]
        kw = dict(data=s, x="level", y=value, order=levels, hue="level", hue_order=levels,
                  palette=LEVEL_PALETTE, ax=ax, legend=False)
        with _quiet_seaborn():
            sns.boxplot(**kw, showfliers=False, fill=False, width=0.55)
        sns.stripplot(**kw, size=5, alpha=0.85, jitter=0.1)
        ax.axhline(0, color="0.4", ls="--", lw=1)
        _level_ticks(ax, s.groupby("level")["caregiver"].nunique(), levels)
        if value == "delta_abs":
            unit = feature_unit(f)
            ax.set_ylabel(f"change care − control: {feature_name(f)}"
                          + (f" ({'percentage points' if unit == '%' else unit})" if unit else ""))
        else:
            ax.set_ylabel(f"relative change of {feature_name(f)} (fraction of |control|)")
        ax.grid(axis="y", alpha=0.3)
    return _readable(fig)


#: Readable names of the level classifiers and baselines.
CLASSIFIER_NAMES: dict[str, str] = {"lda": "LDA", "knn": "k-NN", "logreg": "logistic regression",
                                    "majority": "majority class", "chance": "chance"}


def plot_level_classification(
    summary: pd.DataFrame,
    null: pd.DataFrame,
    *,
    alpha: float = 0.05,
) -> Figure:
    """Cross-validated level classification against baselines and its permutation null.

    Two panels (balanced accuracy = UAR, and macro-F1), one row per model: the grey
    points are the scores of the model rerun with the caregivers' levels permuted (the
    null distribution), the coloured diamond is the real score, labelled with its
    permutation p-value. Vertical lines mark the chance and majority-class baselines.

    Args:
        summary: :attr:`ser.stats.level_classification.LevelClassification.summary`
            (``level_classification.csv``).
        null: :attr:`ser.stats.level_classification.LevelClassification.null`.
        alpha: p-value below which the diamond is filled.

    Returns:
        The figure.
    """
    _check(summary, ["model", "kind", "balanced_accuracy", "macro_f1", "p_perm",
                     "p_perm_macro_f1"], what="plot_level_classification")
    _check(null, ["model", "balanced_accuracy", "macro_f1"], what="plot_level_classification")
    models = summary[summary["kind"] == "model"]
    if models.empty:
        raise ValueError("plot_level_classification: the summary has no model rows "
                         "(classification skipped?)")
    base = summary[summary["kind"] == "baseline"].set_index("model")
    names = [CLASSIFIER_NAMES.get(m, m) for m in models["model"]]
    y = np.arange(len(models))[::-1]
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 1.6 + 0.9 * len(models)), sharey=True,
                             layout="constrained")
    panels = (("balanced_accuracy", "p_perm", "balanced accuracy (UAR, 0-1)"),
              ("macro_f1", "p_perm_macro_f1", "macro-F1 (0-1)"))
    for ax, (metric, pcol, xlabel) in zip(axes, panels, strict=True):
        for yi, (_, row) in zip(y, models.iterrows(), strict=True):
            nv = null.loc[null["model"] == row["model"], metric].to_numpy(float)
            if len(nv):
                ax.scatter(nv, yi + rng.uniform(-0.22, 0.22, len(nv)), s=8, color="0.6",
                           alpha=0.45, lw=0, label="permutation null" if yi == y[0] else None)
            p = row[pcol]
            sig = bool(np.isfinite(p) and p < alpha)
            ax.scatter([row[metric]], [yi], marker="D", s=70, zorder=3, edgecolor="#D55E00",
                       facecolor="#D55E00" if sig else "white", lw=1.8,
                       label="cross-validated score" if yi == y[0] else None)
            ptxt = f"p = {p:.3f}" if np.isfinite(p) else "no test"
            ax.annotate(f"{row[metric]:.2f} ({ptxt})", (row[metric], yi), xytext=(0, 10),
                        textcoords="offset points", ha="center", fontsize=8, zorder=4,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.85})
        for bname, ls in (("chance", "--"), ("majority", ":")):
            if bname in base.index and np.isfinite(base.loc[bname, metric]):
                ax.axvline(base.loc[bname, metric], color="0.25", ls=ls, lw=1.2,
                           label=f"{CLASSIFIER_NAMES[bname]} ({base.loc[bname, metric]:.2f})")
        ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.22), fontsize=8, frameon=False,
                  ncols=2)  # below the axis: never over the points
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].set_ylim(y.min() - 0.6, y.max() + 0.6)
    return _readable(fig)


def save_figure(fig: Figure, path: str, *, dpi: int = 150) -> None:
    """Save a figure as PNG (parents created)."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
