"""Stage 03's model selection and calibration on the out-of-fold predictions of stage 02.

Selection: every candidate of ``results/models/candidates.json`` is scored on its
out-of-fold (OOF) predictions of the training speakers (:mod:`ser.train.cv`): pooled UAR,
its standard deviation over the folds, macro-F1, ECE (before calibration) and the seconds
stage 02 spent on it (:func:`selection_table`, ``results/tables/model_selection.csv``).
The highest UAR is deployed (:func:`best_model`; ties go to the candidate listed first),
recorded in ``results/models/deployed.json`` (:mod:`ser.models.deployed`).

Calibration: temperature scaling (one scalar, so the predicted class never changes) fitted
on the deployed candidate's OOF predictions, the log-probabilities playing the part of the
logits (:func:`fit_oof_temperature`). Those predictions come from models that never saw
the speaker they score, as the held-out and cohort speakers will be; the early-stopping
speakers of the final network are not used (their predictions are over-confident
selections). We chose one temperature over vector scaling because a few hundred OOF
utterances fit one parameter well and 2k+1 parameters poorly; it never changes UAR.
:func:`per_speaker_calibration` then reports ECE per held-out test speaker before and after.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ser.train.calibration import expected_calibration_error, fit_temperature, nll, reliability_diagram
from ser.train.cv import CANDIDATES_FILE, OOF_FILE
from ser.train.metrics import summary_metrics, uar

#: Columns of ``model_selection.csv``.
SELECTION_COLUMNS: tuple[str, ...] = ("model", "family", "uar", "uar_sd", "macro_f1", "ece", "seconds",
                                      "n_utterances", "n_folds")
#: Columns of ``model_selection_folds.csv`` (:func:`fold_table`).
FOLD_COLUMNS: tuple[str, ...] = ("model", "family", "fold", "held_out", "n_utterances", "uar", "macro_f1", "ece",
                                 "ece_calibrated", "temperature")
#: Columns of ``eval_calibration_per_speaker.csv``.
PER_SPEAKER_COLUMNS: tuple[str, ...] = ("speaker", "n", "accuracy", "ece_before", "ece_after",
                                        "ece_if_calibrated", "ece_if_calibrated_p95", "p_calibrated",
                                        "nll_before", "nll_after", "temperature")


def read_candidates(models_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``models_dir / candidates.json`` written by stage 02.

    Raises:
        FileNotFoundError: it is missing (run stage 02_train).
    """
    path = Path(models_dir) / CANDIDATES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: stage 02_train writes it with the candidates it "
                                "cross-validated; run stage 02 first")
    return json.loads(path.read_text(encoding="utf-8"))


def read_oof(bundle_dir: str | os.PathLike[str], labels: Sequence[str]) -> pd.DataFrame:
    """A candidate's ``oof_predictions.csv`` (``path, speaker, fold, label, p_<label>…``).

    Raises:
        FileNotFoundError: no OOF predictions in the folder (retrain it with stage 02).
        ValueError: the file lacks a ``p_<label>`` column of ``labels``.
    """
    path = Path(bundle_dir) / OOF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the model was not cross-validated; train it as a "
                                "candidate of stage 02_train")
    oof = pd.read_csv(path, dtype={"speaker": str, "path": str, "label": str})
    missing = [f"p_{lab}" for lab in labels if f"p_{lab}" not in oof.columns]
    if missing or not {"speaker", "fold", "label"} <= set(oof.columns):
        raise ValueError(f"{path} lacks columns {missing or ['speaker', 'fold', 'label']}; "
                         "rerun stage 02_train")
    return oof


def oof_arrays(oof: pd.DataFrame, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(proba float64 [n, k], y int [n])`` of an OOF frame (rows whose label is in ``labels``)."""
    rows = oof[oof["label"].isin(list(labels))]
    proba = rows[[f"p_{lab}" for lab in labels]].to_numpy(np.float64)
    y = rows["label"].map({lab: i for i, lab in enumerate(labels)}).to_numpy(int)
    return proba, y


def oof_scores(oof: pd.DataFrame, labels: Sequence[str], *, n_bins: int = 15,
               fold_mean: bool = False) -> dict[str, float]:
    """Pooled UAR and macro-F1, UAR standard deviation over the folds, ECE of OOF predictions.

    ``fold_mean``: ``uar`` is the mean of the per-fold UARs instead of the pooled one (with
    one fold per corpus: every corpus counts equally, whatever its size)."""
    labels = list(labels)
    proba, y = oof_arrays(oof, labels)
    pred = np.asarray(labels)[proba.argmax(axis=1)]
    truth = np.asarray(labels)[y]
    m = summary_metrics(truth.tolist(), pred.tolist(), labels)
    folds = oof.loc[oof["label"].isin(labels), "fold"].to_numpy()
    per_fold = [uar(truth[folds == f], pred[folds == f]) for f in sorted(set(folds))]
    return {"uar": float(np.mean(per_fold) if fold_mean else m["uar"]), "uar_sd": float(np.std(per_fold)),
            "macro_f1": float(m["macro_f1"]),
            "ece": expected_calibration_error(proba, y, n_bins=n_bins), "n_utterances": int(len(y)),
            "n_folds": len(per_fold)}


def selection_table(models_dir: str | os.PathLike[str], labels: Sequence[str], *,
                    n_bins: int = 15) -> pd.DataFrame:
    """One row per candidate of ``candidates.json`` (:data:`SELECTION_COLUMNS`), best UAR first
    (stable: candidates with equal UAR keep stage 02's order). With ``cv_by: corpus``, ``uar``
    is the mean of the per-corpus UARs (each held-out corpus counts equally)."""
    record = read_candidates(models_dir)
    by_corpus = record.get("cv_by") == "corpus"
    rows = []
    for c in record["candidates"]:
        scores = oof_scores(read_oof(Path(models_dir) / c["name"], labels), labels, n_bins=n_bins,
                            fold_mean=by_corpus)
        rows.append({"model": c["name"], "family": c["family"], **scores,
                     "seconds": record.get("seconds", {}).get(c["name"], float("nan"))})
    table = pd.DataFrame(rows).reindex(columns=list(SELECTION_COLUMNS))
    return table.sort_values("uar", ascending=False, kind="stable", ignore_index=True)


def folds_description(record: Mapping[str, Any]) -> str:
    """How stage 02 made its folds, in words (from ``candidates.json``)."""
    if record.get("cv_by") == "corpus":
        names = record.get("fold_names") or []
        return f"leave-one-corpus-out over {len(names)} corpora: {', '.join(map(str, names))}"
    return f"{record['cv_folds']} speaker-grouped folds"


def fold_table(models_dir: str | os.PathLike[str], labels: Sequence[str], *,
               n_bins: int = 15) -> pd.DataFrame:
    """Each candidate scored on each fold's out-of-fold predictions (:data:`FOLD_COLUMNS`).

    With ``cv_by: corpus`` a fold is a corpus the model never heard, so this is the
    leave-one-corpus-out table of every candidate, whatever its family. ``ece`` is before
    calibration; ``ece_calibrated`` after a temperature fitted on the *other* folds' OOF
    predictions only (cross-fitted, so the held-out fold never tunes its own calibration).
    """
    record = read_candidates(models_dir)
    by_corpus = record.get("cv_by") == "corpus"
    labels = list(labels)
    names = list(record.get("fold_names") or [])
    rows = []
    for c in record["candidates"]:
        oof = read_oof(Path(models_dir) / c["name"], labels)
        for f, proba, y, t in cross_fitted_folds(oof, labels, equal_folds=by_corpus):
            pred, truth = np.asarray(labels)[proba.argmax(axis=1)], np.asarray(labels)[y]
            m = summary_metrics(truth.tolist(), pred.tolist(), labels)
            rows.append({"model": c["name"], "family": c["family"], "fold": f,
                         "held_out": names[f] if f < len(names) else f"fold {f}",
                         "n_utterances": int(len(y)), "uar": float(m["uar"]), "macro_f1": float(m["macro_f1"]),
                         "ece": expected_calibration_error(proba, y, n_bins=n_bins),
                         "ece_calibrated": expected_calibration_error(_softmax(_logits(proba) / t), y,
                                                                      n_bins=n_bins),
                         "temperature": float(t)})
    out = pd.DataFrame(rows).reindex(columns=list(FOLD_COLUMNS))
    out.attrs["n_labels"] = len(labels)
    return out


def best_model(table: pd.DataFrame) -> str:
    """The candidate with the highest OOF UAR (the first such in table order)."""
    if table.empty:
        raise ValueError("no candidates to select from")
    return str(table.loc[table["uar"].idxmax(), "model"])


def plot_selection(table: pd.DataFrame, *, deployed: str | None = None) -> Figure:
    """UAR (error bar: SD over folds) and ECE of every candidate, side by side."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 0.5 * len(table) + 1.8), sharey=True)
    ypos = np.arange(len(table))[::-1]
    colors = ["tab:orange" if m == deployed else "tab:blue" for m in table["model"]]
    a1.barh(ypos, table["uar"], xerr=table["uar_sd"], color=colors, capsize=3)
    a1.set_yticks(ypos, [f"{m} ({f})" for m, f in zip(table["model"], table["family"], strict=True)])
    a1.set_xlim(0, 1)
    a1.set_xlabel("UAR, out-of-fold (training speakers)")
    a2.barh(ypos, table["ece"], color=colors)
    a2.set_xlabel("ECE, out-of-fold, before calibration")
    a2.set_xlim(0, max(0.3, float(table["ece"].max()) * 1.1))
    fig.tight_layout()
    return fig


def fit_oof_temperature(oof: pd.DataFrame, labels: Sequence[str], *, equal_folds: bool = False) -> float:
    """Temperature minimising the NLL of the OOF predictions (log-probabilities as logits).

    ``equal_folds``: every fold weighs the same in the NLL whatever its size (with one fold
    per corpus, so that the largest corpus does not set the temperature alone)."""
    rows = oof[oof["label"].isin(list(labels))]
    proba, y = oof_arrays(rows, labels)
    weight = None
    if equal_folds:
        fold = rows["fold"].to_numpy()
        weight = 1.0 / pd.Series(fold).map(pd.Series(fold).value_counts()).to_numpy(np.float64)
    return fit_temperature(np.log(np.clip(proba, 1e-12, None)), y, sample_weight=weight)


def _logits(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, None))


def plot_folds(table: pd.DataFrame) -> Figure:
    """UAR of every candidate on every fold of :func:`fold_table` (one group of bars per
    held-out fold, one colour per candidate; chance marked)."""
    models = list(dict.fromkeys(table["model"]))
    folds = list(dict.fromkeys(table["held_out"]))
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(folds) * max(1, len(models))), constrained_layout=True)
    h = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        sub = table[table["model"] == m].set_index("held_out").reindex(folds)
        ax.barh(np.arange(len(folds)) + (i - (len(models) - 1) / 2) * h, sub["uar"], height=h, label=m)
    n_labels = int(table.attrs.get("n_labels", 0))
    if n_labels:
        ax.axvline(1 / n_labels, color="0.4", ls="--", lw=1, label=f"chance ({1 / n_labels:.2f})")
    ax.set_yticks(np.arange(len(folds)), folds)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("UAR on the held-out fold (out-of-fold predictions)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def ece_sampling_reference(proba: np.ndarray, observed: float, *, n_bins: int = 15, n_sim: int = 2000,
                           seed: int = 0) -> tuple[float, float, float]:
    """What ECE a perfectly calibrated model would show on these predictions, by chance alone.

    ECE is biased upwards on few predictions: with 40 utterances even a perfectly
    calibrated model shows an ECE of about 0.1. Labels are drawn from ``proba`` itself
    (each prediction is then exactly calibrated) ``n_sim`` times and the ECE recomputed.

    Args:
        proba: calibrated probabilities ``[n, k]``.
        observed: the ECE observed with the true labels.
        n_bins: confidence bins of the ECE; n_sim: simulations; seed: their seed.

    Returns:
        ``(median, 95th percentile, p)`` of the simulated ECEs; ``p`` is the share of
        simulations at least as large as ``observed`` (small: miscalibrated beyond chance).
    """
    proba = np.asarray(proba, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cum = np.cumsum(proba, axis=1)
    cum[:, -1] = 1.0
    sims = np.empty(int(n_sim))
    for i in range(len(sims)):
        draw = (rng.random((len(proba), 1)) > cum).sum(axis=1)
        sims[i] = expected_calibration_error(proba, draw, n_bins=n_bins)
    return (float(np.median(sims)), float(np.quantile(sims, 0.95)),
            float((1 + (sims >= observed - 1e-12).sum()) / (1 + len(sims))))


def per_speaker_calibration(proba: np.ndarray, y: np.ndarray, speakers: Sequence[Any], *,
                            temperature: float, n_bins: int = 15, n_sim: int = 2000) -> pd.DataFrame:
    """ECE and NLL per speaker before (raw) and after temperature scaling, plus an ``all`` row.

    Beside each calibrated ECE: the ECE a perfectly calibrated model would show on the same
    predictions by chance (``ece_if_calibrated``: median, ``_p95``: 95th percentile) and
    ``p_calibrated``, the share of such chance ECEs at least as large as the observed one
    (:func:`ece_sampling_reference`), so that a speaker's ECE can be read against its
    sampling noise.

    Args:
        proba: raw (uncalibrated) probabilities ``[n, k]``.
        y: class indices ``[n]``.
        speakers: speaker of each row.
        temperature: the fitted temperature.
        n_bins: confidence bins of the ECE.
        n_sim: simulations of the chance reference (0: left empty).

    Returns:
        :data:`PER_SPEAKER_COLUMNS`, one row per speaker (sorted) and ``all``.
    """
    z = _logits(proba)
    spk = np.asarray([str(s) for s in speakers])
    y = np.asarray(y, dtype=int)
    rows = []
    for name in [*sorted(set(spk)), "all"]:
        sel = np.ones(len(spk), bool) if name == "all" else spk == name
        after = _softmax(z[sel] / temperature)
        before = _softmax(z[sel])
        ece_after = expected_calibration_error(after, y[sel], n_bins=n_bins)
        ref = (ece_sampling_reference(after, ece_after, n_bins=n_bins, n_sim=n_sim) if n_sim > 0
               else (np.nan, np.nan, np.nan))
        rows.append({"speaker": name, "n": int(sel.sum()),
                     "accuracy": float((before.argmax(1) == y[sel]).mean()),
                     "ece_before": expected_calibration_error(before, y[sel], n_bins=n_bins),
                     "ece_after": ece_after, "ece_if_calibrated": ref[0], "ece_if_calibrated_p95": ref[1],
                     "p_calibrated": ref[2],
                     "nll_before": nll(z[sel], y[sel]),
                     "nll_after": nll(z[sel], y[sel], temperature=temperature),
                     "temperature": float(temperature)})
    return pd.DataFrame(rows, columns=list(PER_SPEAKER_COLUMNS))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def plot_reliability_per_speaker(proba: np.ndarray, y: np.ndarray, speakers: Sequence[Any], *,
                                 temperature: float, n_bins: int = 15) -> Figure:
    """One reliability diagram per speaker: raw probabilities and after ``temperature``."""
    spk = np.asarray([str(s) for s in speakers])
    names = sorted(set(spk))
    ncol = min(3, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4 * nrow), squeeze=False)
    z = _logits(proba)
    for ax, name in zip(axes.flat, names, strict=False):
        sel = spk == name
        reliability_diagram({"before": _softmax(z[sel]), f"after (T = {temperature:.2f})":
                             _softmax(z[sel] / temperature)}, np.asarray(y)[sel], n_bins=n_bins, ax=ax,
                            title=f"speaker {name} (n = {int(sel.sum())})")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def deployment_record(table: pd.DataFrame, name: str, *, selected_by: str,
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``deployed.json`` keeps beside the name: the candidate's OOF scores and how it was chosen."""
    row = table[table["model"] == name]
    if row.empty:
        raise ValueError(f"{name!r} is not one of stage 02's candidates ({', '.join(table['model'])})")
    r = row.iloc[0]
    return {"family": r["family"], "uar": float(r["uar"]), "uar_sd": float(r["uar_sd"]),
            "macro_f1": float(r["macro_f1"]), "ece_oof": float(r["ece"]), "selected_by": selected_by,
            "n_candidates": int(len(table)), **dict(extra or {})}


def cross_fitted_folds(oof: pd.DataFrame, labels: Sequence[str], *,
                       equal_folds: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
    """Each fold's OOF predictions with the temperature fitted on the *other* folds only.

    Yields:
        ``(fold, proba [n, k], y [n], T)`` per fold in order (rows whose label is in
        ``labels``); ``T`` = 1 when there is no other fold.
    """
    oof = oof[oof["label"].isin(list(labels))]
    for f in sorted(set(oof["fold"].astype(int))):
        held, rest = oof[oof["fold"] == f], oof[oof["fold"] != f]
        proba, y = oof_arrays(held, labels)
        yield f, proba, y, (fit_oof_temperature(rest, labels, equal_folds=equal_folds) if len(rest) else 1.0)


def _cross_fitted_nll_gain(oof: pd.DataFrame, labels: Sequence[str]) -> float:
    """Mean over folds of NLL(T = 1) − NLL(T fitted on the other folds, equal weights):
    positive when a temperature learnt elsewhere helps a fold it never saw."""
    gains = [nll(_logits(proba), y) - nll(_logits(proba), y, temperature=t)
             for _, proba, y, t in cross_fitted_folds(oof, labels, equal_folds=True)]
    return float(np.mean(gains)) if gains else 0.0


def oof_temperature(bundle_dir: str | os.PathLike[str], labels: Sequence[str], *,
                    n_bins: int = 15, equal_folds: bool = False) -> tuple[float, dict[str, Any]]:
    """The temperature of a candidate, fitted on its own ``oof_predictions.csv`` only.

    Nothing of the final bundle's weights or of its early-stopping speakers enters the fit.
    ``equal_folds``: see :func:`fit_oof_temperature` (stage 03 sets it with ``cv_by: corpus``);
    then the temperature is also checked across corpora: fitted on all corpora but one and
    scored on that one, in turn. If it makes the held-out corpora's NLL worse on average, a
    temperature learnt on some corpora does not transfer to a new one and none is applied
    (T = 1; ``info["temperature_kept_at_1"]`` says why).

    Returns:
        ``(temperature, info)``: info has ``n_fit``, ``fit_speakers`` (the training speakers,
        sorted), ``oof_ece_before``, ``oof_ece_after`` and ``oof_nll_before``, ``oof_nll_after``.
    """
    oof = read_oof(bundle_dir, labels)
    proba, y = oof_arrays(oof, labels)
    t = fit_oof_temperature(oof, labels, equal_folds=equal_folds)
    z = _logits(proba)
    transfer: dict[str, Any] = {}
    if equal_folds:  # one fold per corpus: does a temperature fitted on other corpora help a new one?
        gain = _cross_fitted_nll_gain(oof, labels)
        transfer = {"cross_fitted_nll_gain": gain}
        if not gain > 0:
            t, transfer["temperature_kept_at_1"] = 1.0, (
                "a temperature fitted on the other corpora made the held-out corpus's NLL worse "
                "on average, so none is applied")
    return t, {**transfer, "n_fit": int(len(y)), "equal_folds": bool(equal_folds), "fit_speakers": sorted(oof["speaker"].astype(str).unique().tolist()),
               "oof_ece_before": expected_calibration_error(_softmax(z), y, n_bins=n_bins),
               "oof_ece_after": expected_calibration_error(_softmax(z / t), y, n_bins=n_bins),
               "oof_nll_before": nll(z, y), "oof_nll_after": nll(z, y, temperature=t)}
