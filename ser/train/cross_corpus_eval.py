"""Leave-one-corpus-out (LOCO) evaluation of the classical family, beside in-corpus LOSO.

:func:`evaluate_loco`: for each corpus, a :class:`ClassicalModel` is tuned
(:meth:`ClassicalModel.fit_grid`, speaker-grouped inner CV) and fitted on the utterances of
all *other* corpora and tested on the held-out one, whose speakers it has never heard:
UAR, macro-F1 (:mod:`ser.train.metrics`) and top-label ECE
(:func:`ser.train.calibration.expected_calibration_error`) per held-out corpus. For
comparison the same estimator is evaluated leave-one-speaker-out *within* each corpus
(:func:`ser.train.classical_loso.evaluate_loso`), so the table shows the transfer gap
(``in_corpus_loso_uar - uar``). :func:`write_cross_corpus_table` writes
``results/tables/cross_corpus.csv``. :func:`loco_from_utterances` runs it on the labelled
rows of ``utterances.csv`` (stage 03's ``loco``), :func:`plot_loco` draws held-out against
in-corpus UAR per corpus.

Speaker ids are prefixed with their corpus (``emodb:03``), so equal ids in two corpora
never count as one speaker. With ``speaker_norm`` every speaker, the held-out ones
included, is z-scored by its own (unlabelled) statistics: transductive, reported as such.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from tqdm import tqdm

from ser.core import atomic
from ser.data.corpora import LANGUAGES
from ser.models.classical import features as classical_features
from ser.models.classical.classes import aligned_proba
from ser.models.classical.estimator import ClassicalModel, check_aligned
from ser.train.calibration import expected_calibration_error
from ser.train.classical_loso import evaluate_loso
from ser.train.metrics import summary_metrics

#: Columns of ``results/tables/cross_corpus.csv`` (:func:`evaluate_loco`'s table).
TABLE_COLUMNS: tuple[str, ...] = (
    "held_out_corpus", "language", "family", "estimator", "feature_set", "speaker_norm",
    "uar", "macro_f1", "ece", "n_train", "n_test", "in_corpus_loso_uar",
)
#: ``family`` of every row (the classical models of :mod:`ser.models.classical`).
FAMILY: str = "classical"


@dataclass(frozen=True)
class LocoResult:
    """What :func:`evaluate_loco` returns.

    Attributes:
        table: one row per feature set and held-out corpus, :data:`TABLE_COLUMNS`.
        predictions: one row per held-out utterance and feature set, indexed like the
            feature tables: ``feature_set, held_out_corpus, speaker, y_true, y_pred,
            p_<class>…`` (``speaker`` prefixed with its corpus).
        train_speakers: ``{(feature_set, held_out_corpus): sorted training speakers}``.
        best_params: ``{(feature_set, held_out_corpus): parameters chosen by the inner CV}``.
        loso: ``{(feature_set, corpus): overall dict}`` of the in-corpus LOSO
            (:func:`evaluate_loso`; empty when it was not run).
    """

    table: pd.DataFrame
    predictions: pd.DataFrame
    train_speakers: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    best_params: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    loso: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _check_tables(feature_tables: Mapping[str, pd.DataFrame]) -> pd.Index:
    if not feature_tables:
        raise ValueError("feature_tables is empty; give {feature_set: [n, d] table}")
    names = list(feature_tables)
    first = feature_tables[names[0]]
    for name in names:
        t = feature_tables[name]
        if not isinstance(t, pd.DataFrame):
            raise ValueError(f"feature_tables[{name!r}] must be a DataFrame; got {type(t).__name__}")
        if not t.index.equals(first.index):
            raise ValueError(f"feature table {name!r} has other rows than {names[0]!r}; "
                             "align them (same paths, same order)")
    return first.index


def evaluate_loco(
    feature_tables: Mapping[str, pd.DataFrame],
    labels: Sequence[Any],
    speakers: Sequence[Any],
    corpora: Sequence[Any],
    *,
    estimator: str = "svm_linear",
    speaker_norm: bool = False,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    inner_folds: int = 5,
    in_corpus_loso: bool = True,
    languages: Mapping[str, str] | None = None,
    n_bins: int = 15,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
    train_only: Sequence[bool] | None = None,
    balance_corpora: bool = True,
) -> LocoResult:
    """Leave-one-corpus-out evaluation of one classical estimator on each feature set.

    For every feature set and corpus ``c``: :meth:`ClassicalModel.fit_grid` on the rows
    of all corpora but ``c`` (inner CV grouped by speaker over those rows only), then
    probabilities for the rows of ``c``. With ``in_corpus_loso`` the estimator is also
    evaluated leave-one-speaker-out within ``c`` (:func:`evaluate_loso`, same grid,
    folds and seed), giving ``in_corpus_loso_uar`` (pooled UAR) for comparison.

    Args:
        feature_tables: ``{feature_set: [n, d] table}``, all with the same row index
            (e.g. from :func:`ser.models.classical.features.extract_features`).
        labels: ``[n]`` class labels.
        speakers: ``[n]`` speaker ids (within their corpus).
        corpora: ``[n]`` corpus name of each row; at least 2 corpora.
        estimator: one of :data:`ser.models.classical.estimator.ESTIMATORS`.
        speaker_norm: z-score each speaker's features by its own statistics
            (transductive, label-free).
        param_grid: grid of the final estimator; default its default grid.
        inner_folds: inner grouped folds.
        in_corpus_loso: also run the in-corpus LOSO (each corpus needs 3+ speakers);
            ``False`` leaves ``in_corpus_loso_uar`` NaN.
        languages: ``{corpus: ISO 639-1}`` for the ``language`` column; default
            :data:`ser.data.corpora.LANGUAGES` (empty for unknown corpora).
        n_bins: confidence bins of the ECE.
        seed: estimator seed.
        n_jobs: parallel fits inside each grid search.
        progress: tqdm bar over the held-out corpora.
        train_only: ``[n]`` flags of rows that only ever train (e.g. augmented copies of
            an utterance, under its corpus and speaker): used when their corpus is not
            held out, never tested nor in the in-corpus LOSO, nor scored or calibrated on in
            the inner folds (they stay in their speaker's fold). Default: none.
        balance_corpora: every (training corpus, class) weighs the same in the fits
            (:func:`ser.models.classical.estimator.balance_weights`), as in stage 02;
            ``False``: class-balanced only, so a large corpus dominates.

    Returns:
        :class:`LocoResult` (``table`` rows ordered by feature set, then corpus name).

    Raises:
        ValueError: no or misaligned feature tables, misaligned labels/speakers/corpora,
            NA labels or corpora, fewer than 2 corpora, a training part with fewer than
            2 speakers, or (with ``in_corpus_loso``) a corpus with fewer than 3 speakers.
    """
    index = _check_tables(feature_tables)
    first = feature_tables[next(iter(feature_tables))]
    y, g_raw = check_aligned(first, labels, speakers)
    c = np.asarray(corpora, dtype=object)
    if c.shape != (len(first),):
        raise ValueError(f"corpora ({c.shape}) must have one entry per feature row ({len(first)})")
    if pd.isna(pd.Series(c)).any():
        raise ValueError("corpora contains NA; give every row its corpus name")
    c = c.astype(str)
    extra = np.zeros(len(c), dtype=bool) if train_only is None else np.asarray(train_only, dtype=bool)
    if extra.shape != c.shape:
        raise ValueError(f"train_only ({extra.shape}) must have one flag per feature row ({len(c)})")
    g = np.char.add(np.char.add(c, ":"), g_raw)
    names = sorted(pd.unique(c).tolist())
    if len(names) < 2:
        raise ValueError(f"leave-one-corpus-out needs at least 2 corpora; got {names}")
    if in_corpus_loso:
        few = [n for n in names if len(pd.unique(g[(c == n) & ~extra])) < 3]
        if few:
            raise ValueError(f"corpus {', '.join(few)} has fewer than 3 speakers: in-corpus "
                             "leave-one-speaker-out is impossible; pass in_corpus_loso=False")
    langs = LANGUAGES if languages is None else languages
    classes = sorted(pd.unique(y).tolist())
    rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    train_speakers: dict[tuple[str, str], tuple[str, ...]] = {}
    best: dict[tuple[str, str], dict[str, Any]] = {}
    loso: dict[tuple[str, str], dict[str, Any]] = {}
    jobs = [(fs, held) for fs in feature_tables for held in names]
    for fs, held in tqdm(jobs, desc=f"LOCO {estimator}", disable=not progress):
        X = feature_tables[fs].to_numpy(dtype=np.float64)
        tr = c != held
        te = ~tr & ~extra
        if len(pd.unique(g[tr])) < 2:
            raise ValueError(f"training on all corpora but {held!r} leaves fewer than 2 speakers")
        t0 = time.perf_counter()
        model = ClassicalModel(estimator=estimator, speaker_norm=speaker_norm, seed=seed)
        model.fit_grid(X[tr], y[tr], g[tr], param_grid=param_grid, inner_folds=inner_folds, n_jobs=n_jobs,
                       strata=c[tr] if balance_corpora else None, scored=~extra[tr] if extra.any() else None)
        proba = aligned_proba(model.predict_proba(X[te], g[te]), model.classes_, classes)
        y_pred = np.asarray(classes)[proba.argmax(axis=1)]
        yt = y[te]
        m = summary_metrics(yt, y_pred, sorted(set(yt.tolist()) | set(y_pred.tolist())))
        ece = expected_calibration_error(proba, np.searchsorted(classes, yt), n_bins=n_bins)
        loso_uar = float("nan")
        if in_corpus_loso:
            _, overall, _ = evaluate_loso(feature_tables[fs].loc[te], y[te], g[te], estimator=estimator,
                                          speaker_norm=speaker_norm, param_grid=param_grid,
                                          inner_folds=inner_folds, seed=seed, n_jobs=n_jobs, progress=False)
            loso[(fs, held)] = overall
            loso_uar = float(overall["uar"])
        rows.append({"held_out_corpus": held, "language": langs.get(held, ""), "family": FAMILY,
                     "estimator": estimator, "feature_set": fs, "speaker_norm": bool(speaker_norm),
                     "uar": m["uar"], "macro_f1": m["macro_f1"], "ece": ece,
                     "n_train": int(tr.sum()), "n_test": int(te.sum()), "in_corpus_loso_uar": loso_uar})
        train_speakers[(fs, held)] = tuple(sorted(pd.unique(g[tr]).tolist()))
        best[(fs, held)] = {**model.best_params_, "inner_uar": model.inner_uar_,
                            "fit_s": round(time.perf_counter() - t0, 3)}
        p = pd.DataFrame({"feature_set": fs, "held_out_corpus": held, "speaker": g[te],
                          "y_true": yt, "y_pred": y_pred}, index=index[te])
        for j, k in enumerate(classes):
            p[f"p_{k}"] = proba[:, j]
        preds.append(p)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return LocoResult(table=table, predictions=pd.concat(preds), train_speakers=train_speakers,
                      best_params=best, loso=loso)


def write_cross_corpus_table(table: pd.DataFrame, path: str | os.PathLike[str], *,
                             replace: bool = True) -> Path:
    """Write (or merge into) ``cross_corpus.csv`` atomically.

    Rows of ``table`` replace the rows of an existing file with the same ``held_out_corpus,
    family, estimator, feature_set, speaker_norm``; other rows are kept.

    Args:
        table: rows with :data:`TABLE_COLUMNS` (e.g. :attr:`LocoResult.table`).
        path: the CSV, usually ``results/tables/cross_corpus.csv``.
        replace: ``False`` overwrites the whole file with ``table``.

    Returns:
        The written path.

    Raises:
        ValueError: ``table`` lacks a column, or the existing file has other columns.
    """
    missing = [col for col in TABLE_COLUMNS if col not in table.columns]
    if missing:
        raise ValueError(f"cross-corpus table lacks column(s) {missing}")
    out = table[list(TABLE_COLUMNS)]
    path = Path(path)
    if replace and path.is_file():
        old = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"language": str})
        if list(old.columns) != list(TABLE_COLUMNS):
            raise ValueError(f"{path}: columns {list(old.columns)} are not those of a cross-corpus "
                             f"table {list(TABLE_COLUMNS)}; move it away")
        key = ["held_out_corpus", "family", "estimator", "feature_set", "speaker_norm"]
        new_keys = set(out[key].astype(str).agg("|".join, axis=1))
        keep = ~old[key].astype(str).agg("|".join, axis=1).isin(new_keys)
        out = pd.concat([old[keep], out], ignore_index=True)
    return atomic.atomic_write_csv(path, out, index=False)


def loco_from_utterances(
    utterances: pd.DataFrame,
    *,
    feature_sets: Sequence[str] = ("egemaps",),
    estimator: str = "svm_rbf",
    speaker_norm: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    sample_rate: int = 16000,
    inner_folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = False,
    balance_corpora: bool = True,
) -> tuple[LocoResult, pd.DataFrame]:
    """:func:`evaluate_loco` on every labelled utterance of an utterance table (all splits).

    Features are extracted (and cached) with
    :func:`ser.models.classical.features.extract_features`; files that cannot be read are
    returned, not dropped silently.

    Args:
        utterances: ``utterances.csv`` rows with ``path, label, speaker, corpus``
            (``language`` optional); 2+ corpora, each with 3+ speakers.
        feature_sets: classical feature sets (:data:`ser.models.classical.features.FEATURE_SETS`).
        estimator: one of :data:`ser.models.classical.estimator.ESTIMATORS`.
        speaker_norm: per-speaker normalisation (transductive, see the module docstring).
        cache_dir: feature cache folder (``None``: no cache).
        sample_rate: Hz, audio is resampled to it before feature extraction.
        inner_folds: speaker-grouped inner folds of the tuning.
        seed: estimator seed.
        n_jobs: feature-extraction workers and parallel inner folds.
        progress: tqdm bars.
        balance_corpora: see :func:`evaluate_loco`.

    Returns:
        ``(result, errors)``: the :class:`LocoResult` (``in_corpus_loso_uar`` filled) and
        the files that could not be read (``path, reason``).

    Raises:
        ValueError: a missing column, fewer than 2 corpora, or a corpus with fewer than 3
            speakers (named).
    """
    missing = [c for c in ("path", "label", "speaker", "corpus") if c not in utterances.columns]
    if missing:
        raise ValueError(f"utterances table lacks column(s) {missing}; it must come from stage 01")
    rows = utterances[utterances["label"].notna()]
    names = sorted(rows["corpus"].dropna().astype(str).unique().tolist())
    if len(names) < 2:
        raise ValueError(f"leave-one-corpus-out needs utterances of at least 2 corpora; got {names}; "
                         "set corpora in stage 01_preprocess")
    paths_ = rows["path"].astype(str).tolist()
    tables: dict[str, pd.DataFrame] = {}
    errors: list[pd.DataFrame] = []
    for fs in feature_sets:
        X, err = classical_features.extract_features(paths_, feature_set=fs, sample_rate=sample_rate,
                                                     cache_dir=cache_dir, n_jobs=n_jobs, progress=progress)
        tables[fs] = X
        errors.append(err)
    common = tables[feature_sets[0]].index
    for X in tables.values():
        common = common.intersection(X.index, sort=False)
    kept = rows.set_index(rows["path"].astype(str)).loc[common]
    kept = kept[~kept.index.duplicated()]
    tables = {fs: X.loc[kept.index] for fs, X in tables.items()}
    langs = dict(LANGUAGES)
    if "language" in kept.columns:
        langs.update({str(c): str(lang) for c, lang in kept.groupby("corpus")["language"].first().dropna().items()})
    result = evaluate_loco(tables, kept["label"].to_numpy(), kept["speaker"].astype(str).to_numpy(),
                           kept["corpus"].astype(str).to_numpy(), estimator=estimator,
                           speaker_norm=speaker_norm, inner_folds=inner_folds, languages=langs,
                           seed=seed, n_jobs=n_jobs, progress=progress, balance_corpora=balance_corpora)
    err = pd.concat(errors, ignore_index=True).drop_duplicates() if errors else pd.DataFrame()
    return result, err


def plot_loco(table: pd.DataFrame, ax: Axes | None = None, *, n_classes: int | None = None) -> Axes:
    """Held-out (LOCO) UAR beside in-corpus LOSO UAR, per corpus and feature set.

    Args:
        table: rows with :data:`TABLE_COLUMNS` (e.g. :attr:`LocoResult.table`).
        ax: axes to draw on (``None``: a new figure).
        n_classes: classes of the task; draws the chance level ``1 / n_classes``.

    Returns:
        The axes (bars: in-corpus, then held out, labelled with the held-out ECE).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.4 * len(table), 3.2))
    labels = [f"{r.held_out_corpus}\n{r.feature_set}" if table["feature_set"].nunique() > 1
              else str(r.held_out_corpus) for r in table.itertuples()]
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["in_corpus_loso_uar"], width=0.4, label="in corpus (LOSO)", color="tab:gray")
    bars = ax.bar(x + 0.2, table["uar"], width=0.4, label="held out (LOCO)", color="tab:blue")
    ax.bar_label(bars, labels=[f"ECE {e:.2f}" for e in table["ece"]], fontsize=7, padding=2)
    if n_classes:
        ax.axhline(1.0 / n_classes, ls="--", lw=0.8, color="k", label=f"chance, {n_classes} classes")
    ax.set_xticks(x, labels)
    ax.set(ylim=(0, 1), ylabel="UAR", xlabel="corpus")
    ax.legend(fontsize=8, loc="upper right")
    return ax
