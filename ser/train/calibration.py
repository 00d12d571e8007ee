"""Probability calibration: temperature scaling, expected calibration error, reliability.

The emotion probabilities of stage 04 are used as *measurements* (``p_angry`` per
window, then averaged, modelled and compared across caregivers), so a model that says
0.95 should be right about 95 % of the time. Deep classifiers trained with
cross-entropy are usually over-confident. Temperature scaling (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017) divides the logits by one scalar
``T`` fitted on held-out data by minimising the negative log-likelihood; it keeps
every prediction (``argmax`` is unchanged, so UAR and accuracy do not move) and only
reshapes the probabilities.

Protocol used by stage 03 (:mod:`ser.train.selection`): ``T`` is fitted on the deployed
candidate's **out-of-fold** predictions of the training speakers (stage 02's speaker-grouped
cross-validation, :mod:`ser.train.cv`; log-probabilities as logits), never on the
speakers that stopped a network's training; the expected calibration error (ECE) is
reported on the **test** speakers before (``T = 1``) and after, overall and per speaker.
``T`` is stored in the bundle's ``model.json`` as ``{"calibration": {"temperature": T,
"fitted_on": "oof", ...}}``, and every bundle's ``predict_proba`` applies it, so every
later stage gets calibrated probabilities without further code.

ECE here is the top-label ECE with equal-width confidence bins (Naeini et al. 2015;
Guo et al. 2017): ``sum_b n_b / n * |accuracy_b - confidence_b|``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import optimize, special
from tqdm import tqdm

from ser.models.bundle import Bundle, read_bundle_meta
from ser.models.integrity import write_sealed_meta
from ser.models.window import fit_window
from ser.signal import audio, pitchnorm

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Range searched for the temperature (the fit clips to it).
T_BOUNDS: tuple[float, float] = (0.05, 20.0)
#: Method name stored in ``model.json["calibration"]["method"]``.
METHOD = "temperature_scaling"


def _check_logits_y(logits: np.ndarray, y: np.ndarray, what: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"{what} must be a 2-D array [n, n_labels] with n >= 1 and n_labels >= 2; "
                         f"got shape {z.shape}")
    if t.shape != (z.shape[0],):
        raise ValueError(f"y must hold one class index per row of {what}: expected shape "
                         f"({z.shape[0]},), got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"y must be integer class indices (column numbers of {what}); got dtype "
                         f"{t.dtype} (map labels with labels.index(label))")
    if t.min() < 0 or t.max() >= z.shape[1]:
        raise ValueError(f"y holds class indices outside 0..{z.shape[1] - 1}: "
                         f"{sorted(set(t[(t < 0) | (t >= z.shape[1])].tolist()))[:5]}")
    if not np.isfinite(z).all():
        raise ValueError(f"{what} contain NaN or inf values")
    return z, t.astype(int)


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax ``softmax(logits / T)``, as :meth:`Bundle.predict_proba`.

    Args:
        logits: ``[n, k]`` raw logits.
        temperature: ``T > 0``.

    Returns:
        float64 ``[n, k]`` probabilities, rows sum to 1.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature}")
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def nll(logits: np.ndarray, y: np.ndarray, *, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of the true classes under ``softmax(logits / T)``.

    Args:
        logits: ``[n, k]`` raw logits.
        y: ``[n]`` integer class indices.
        temperature: ``T > 0``.
    """
    z, t = _check_logits_y(logits, y)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature}")
    logp = special.log_softmax(z / temperature, axis=1)
    return float(-logp[np.arange(len(t)), t].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, *,
                    bounds: tuple[float, float] = T_BOUNDS,
                    sample_weight: np.ndarray | None = None) -> float:
    """Fit the softmax temperature that minimises the NLL of held-out predictions.

    A bounded scalar search (Brent's method) over ``log T``; the NLL is convex in
    ``1 / T``, so the optimum is unique. ``T > 1`` softens over-confident models,
    ``T < 1`` sharpens under-confident ones.

    Args:
        logits: ``[n, k]`` raw logits of the validation speakers (not the test speakers).
        y: ``[n]`` integer class indices (column numbers of ``logits``).
        bounds: search range ``(T_min, T_max)``, default ``(0.05, 20)``.
        sample_weight: ``[n]`` non-negative weights of the rows in the NLL (default equal),
            e.g. so that every corpus counts equally whatever its size.

    Returns:
        The fitted temperature in ``bounds``.

    Raises:
        ValueError: bad shapes, non-integer or out-of-range ``y``, non-finite logits,
            or bad ``bounds``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(2000, 4)) * 2
        >>> y = np.array([rng.choice(4, p=p) for p in softmax_t(z)])
        >>> abs(fit_temperature(3 * z, y) - 3) < 0.3  # logits 3x too sharp -> T close to 3
        True
    """
    z, t = _check_logits_y(logits, y)
    lo, hi = (float(b) for b in bounds)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < T_min < T_max < inf; got {bounds}")
    idx = np.arange(len(t))
    w = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if len(w) != len(t) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"sample_weight must be {len(t)} finite non-negative weights with a positive sum")
    w = w / w.sum()

    def objective(log_t: float) -> float:
        logp = special.log_softmax(z / math.exp(log_t), axis=1)
        return float(-(w * logp[idx, t]).sum())

    res = optimize.minimize_scalar(objective, bounds=(math.log(lo), math.log(hi)), method="bounded",
                                   options={"xatol": 1e-5})
    return float(np.clip(math.exp(res.x), lo, hi))


def _check_probs_y(probs: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    p, t = _check_logits_y(probs, y, what="probs")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs must be non-negative with rows summing to 1 (softmax outputs); "
                         "pass probabilities, not logits")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    return p, t


def reliability_table(probs: np.ndarray, y: np.ndarray, *, n_bins: int = 15) -> pd.DataFrame:
    """Top-label confidence vs accuracy in equal-width confidence bins.

    Args:
        probs: ``[n, k]`` class probabilities.
        y: ``[n]`` integer class indices.
        n_bins: bins over ``[0, 1]``; bin ``b`` holds confidences in ``(lo, hi]``
            (the first also holds 0).

    Returns:
        One row per bin: ``bin, lo, hi, n, confidence, accuracy, gap`` (``confidence``,
        ``accuracy`` and ``gap = accuracy - confidence`` are NaN for empty bins).
    """
    p, t = _check_probs_y(probs, y, n_bins)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(float)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, int(n_bins) - 1)
    n = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / n
        acc = np.bincount(b, weights=correct, minlength=n_bins) / n
    return pd.DataFrame({"bin": np.arange(n_bins), "lo": edges[:-1], "hi": edges[1:], "n": n,
                         "confidence": mean_conf, "accuracy": acc, "gap": acc - mean_conf})


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, *, n_bins: int = 15) -> float:
    """Top-label expected calibration error: ``sum_b n_b / n * |accuracy_b - confidence_b|``.

    Args:
        probs: ``[n, k]`` class probabilities (rows sum to 1).
        y: ``[n]`` integer class indices.
        n_bins: equal-width confidence bins over ``[0, 1]``.

    Returns:
        ECE in ``[0, 1]`` (0 = perfectly calibrated).

    Raises:
        ValueError: bad shapes, rows not summing to 1, bad ``y`` or ``n_bins``.
    """
    table = reliability_table(probs, y, n_bins=n_bins)
    filled = table[table["n"] > 0]
    return float((filled["n"] * filled["gap"].abs()).sum() / filled["n"].sum())


def reliability_diagram(probs: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray, *,
                        n_bins: int = 15, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Reliability diagram: accuracy against confidence per bin, one curve per probability set.

    Pass ``{"before": p_raw, "after": p_calibrated}`` to draw both on one axes; each
    curve's legend entry gives its ECE. The diagonal is perfect calibration; points
    below it are over-confident. Marker area grows with the number of predictions in the bin.

    Args:
        probs: ``[n, k]`` probabilities, or a mapping ``name -> [n, k]`` (same ``y``).
        y: ``[n]`` integer class indices.
        n_bins: equal-width confidence bins.
        ax: axes to draw on (``None``: a new figure).
        title: axes title.

    Returns:
        The axes.
    """
    sets = dict(probs) if isinstance(probs, Mapping) else {"model": probs}
    if not sets:
        raise ValueError("probs: give at least one probability array")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for i, (name, p) in enumerate(sets.items()):
        table = reliability_table(p, y, n_bins=n_bins)
        filled = table[table["n"] > 0]
        ece = expected_calibration_error(p, y, n_bins=n_bins)
        ax.plot(filled["confidence"], filled["accuracy"], color=f"C{i}",
                label=f"{name} (ECE {ece:.3f})")
        ax.scatter(filled["confidence"], filled["accuracy"], s=12 + 200 * filled["n"] / filled["n"].sum(),
                   color=f"C{i}", alpha=0.8, zorder=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-class probability)", ylabel="accuracy")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------- bundles


def utterance_logits(bundle: Bundle, utterances: pd.DataFrame, *, split: str, batch_size: int = 64,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Raw logits of the centre window of each utterance of one partition.

    Each utterance is one model window (:func:`ser.models.window.fit_window`, as in validation
    and in stage 04's windows); rows whose label is not a model label are skipped and
    unreadable files are left out and counted.

    Args:
        bundle: a loaded model.
        utterances: table with ``path, label, speaker, split``.
        split: partition, e.g. ``"val"`` (fit) or ``"test"`` (report).
        batch_size: windows per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``(logits, y, rows)``: float32 ``[n, k]`` logits (before any temperature),
        int ``[n]`` class indices into ``bundle.labels``, and the ``n`` rows used
        (``speaker, label``; ``rows.attrs["n_failed"]`` counts unreadable files).

    Raises:
        ValueError: missing columns, or no readable utterance of ``split`` with a model label.
    """
    missing = [c for c in ("path", "label", "speaker", "split") if c not in utterances.columns]
    if missing:
        raise ValueError(f"utterances table lacks columns {missing}; it must come from stage 01_preprocess")
    labels = bundle.labels
    rows = utterances[(utterances["split"] == split) & utterances["label"].isin(labels)]
    windows, kept, n_failed = [], [], 0
    load = pitchnorm.SpeakerLoader(rows, sample_rate=bundle.sample_rate, target_hz=bundle.pitch_norm_hz)
    for r in tqdm(rows.itertuples(index=False), total=len(rows), desc=f"logits {split}", unit="utt",
                  disable=not progress):
        try:
            wave = load(r.path, r.speaker)
        except (audio.AudioError, OSError, ValueError):
            n_failed += 1
            continue
        windows.append(fit_window(wave, bundle.window_samples))
        kept.append({"speaker": r.speaker, "label": r.label})
    if not windows:
        raise ValueError(f"no readable utterance with split == {split!r} and a label in {labels} "
                         f"({n_failed} unreadable); calibration needs the {split} speakers of stage 01")
    logits = bundle.predict_logits(np.stack(windows), batch_size=batch_size)
    used = pd.DataFrame(kept)
    used.attrs["n_failed"] = n_failed
    y = np.array([labels.index(lab) for lab in used["label"]], dtype=int)
    return logits, y, used


def store_calibration(bundle_dir: str | os.PathLike[str], *, temperature: float, ece_before: float,
                      ece_after: float, split: str = "val", ece_split: str = "test", n_bins: int = 15,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.json["calibration"]`` (atomic rewrite of the bundle's ``model.json``).

    :meth:`ser.models.bundle.Bundle.predict_proba` then returns ``softmax(logits / temperature)``.

    Args:
        bundle_dir: bundle folder holding ``model.json``.
        temperature: fitted temperature (``T > 0``).
        ece_before: ECE at ``T = 1`` on ``ece_split``.
        ece_after: ECE at ``temperature`` on ``ece_split``.
        split: partition the temperature was fitted on (validation speakers).
        ece_split: partition the ECEs were measured on.
        n_bins: confidence bins of the ECE.
        extra: further JSON-serialisable entries (e.g. NLL before/after, counts).

    Returns:
        Path of ``model.json``.

    Raises:
        FileNotFoundError, ValueError: no valid bundle at ``bundle_dir``; a temperature
            that is not a finite number > 0.
    """
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature}")
    folder = Path(bundle_dir)
    meta = read_bundle_meta(folder)
    meta["calibration"] = {
        "method": METHOD, "temperature": float(temperature), "fitted_on": split,
        "ece_split": ece_split, "ece_before": float(ece_before), "ece_after": float(ece_after),
        "n_bins": int(n_bins), **dict(extra or {}),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return write_sealed_meta(folder, meta, update=True)  # the bundle's seal covers the new temperature
