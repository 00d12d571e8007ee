"""Fast simulation of window tables (``windows.csv``) with planted effects.

:func:`simulate_windows` draws a cohort at the window level (caregiver and recording
intercepts, AR(1) window noise within each recording, planted fixed effects) in a few
vectorised steps; optionally with the violations real data show (heavy tails,
caregiver-specific variability, unequal recording lengths by level, lost recordings). It is used by the tests and by the validation by simulation
(:mod:`ser.stats.validation`, ``benchmarks/bench_stats_validation.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import signal as _signal

from ser.data.schema import LEVEL_INDEX, LEVELS, PHASES

#: Simulated features: (kind, baseline, caregiver SD, recording SD, window SD).
#: ``logit`` features are simulated on the logit scale (effects in logit units),
#: ``linear`` ones in their own unit (Hz, dB).
SIM_FEATURES: dict[str, tuple[str, float, float, float, float]] = {
    "f0_hz": ("linear", 210.0, 20.0, 6.0, 18.0),
    "energy_db": ("linear", -28.0, 3.0, 1.0, 3.0),
    "speech_ratio": ("logit", 0.4, 0.5, 0.2, 1.0),
}
_SIM_LABEL_BASE: dict[str, float] = {"angry": -1.0, "happy": -0.3, "neutral": 0.8, "sad": -0.5}


def _term_factor(name: str, *, care: np.ndarray, score: np.ndarray, level: np.ndarray,
                 time: np.ndarray) -> np.ndarray:
    if name in ("phase", "phase[care]"):
        return care
    if name == "level_trend":
        return score
    if name == "time":
        return time
    m = re.fullmatch(r"level\[(\w+)\]", name)
    if m and m.group(1) in LEVELS[1:]:
        return (level == m.group(1)).astype(float)
    raise ValueError(
        f"simulate_windows: unknown effect term factor {name!r}; use products (joined by "
        f"':') of 'phase', 'level_trend', 'time', 'level[<{'|'.join(LEVELS[1:])}>]', "
        f"e.g. 'phase:level_trend'")


def simulate_windows(
    *,
    seed: int,
    effects: Mapping[str, Mapping[str, float]] | None = None,
    n_per_level: Sequence[int] = (2, 9, 4, 8),
    duration_s: float = 360.0,
    hop_s: float = 3.0,
    window_s: float = 3.0,
    labels: Sequence[str] = ("angry", "happy", "neutral", "sad"),
    ar_rho: float = 0.6,
    unvoiced_below: float = 0.1,
    tail_df: float | None = None,
    caregiver_sd_ratio: float = 1.0,
    duration_by_level: Sequence[float] | None = None,
    missing_share: float = 0.0,
) -> pd.DataFrame:
    """Simulate a ``windows.csv``-like table with planted effects (fast, vectorised).

    Each feature is ``baseline + Σ effect·term + u_caregiver + v_recording + e_window``
    with normal caregiver and recording (caregiver × phase) intercepts and AR(1) window
    noise (``ar_rho``) within each recording. Emotion probabilities are the softmax of
    per-label logits; ``speech_ratio`` and ``voiced_ratio`` are logistic. ``f0_hz`` is
    empty where ``voiced_ratio < unvoiced_below``.

    Args:
        seed: seed of the random generator (the table is a pure function of the args).
        effects: planted effects, ``{feature: {term: value}}``. Features: ``p_<label>``
            (logit units of that label), ``speech_ratio`` (logit units), ``f0_hz`` (Hz),
            ``energy_db`` (dB). Terms are products of ``phase`` (1 in care),
            ``level_trend`` (0..3), ``level[<level>]`` (indicator) and ``time``
            (fraction of the recording, 0–1) joined by ``:``, e.g.
            ``{"f0_hz": {"phase": 8.0, "level_trend": 3.0, "phase:level_trend": 2.0}}``.
            ``None`` or ``{}`` simulates a null cohort.
        n_per_level: caregivers per level (untrained, beginner, intermediate, expert).
        duration_s: length of every recording, s.
        hop_s: window hop, s.
        window_s: window length, s.
        labels: emotion labels (``p_<label>`` columns).
        ar_rho: lag-1 autocorrelation of the window noise within a recording.
        unvoiced_below: ``voiced_ratio`` below which a window has no F0.
        tail_df: Student-t degrees of freedom (> 2) of every noise component (caregiver,
            recording, window), scaled to the same SD; ``None``: normal. Heavy tails.
        caregiver_sd_ratio: caregivers' window-noise SDs differ by up to this factor
            (each caregiver's SD multiplier log-uniform in [1/sqrt(r), sqrt(r)]); 1: equal.
        duration_by_level: recording length per level (untrained … expert), s, instead of
            ``duration_s`` (e.g. longer expert recordings).
        missing_share: share of recordings dropped at random (0-1), as lost recordings.

    Returns:
        DataFrame with the ``windows.csv`` columns (``recording, caregiver, level, phase,
        start_s, end_s, p_<label>…, f0_hz, f0_mean_hz, f0_std_hz, voiced_ratio,
        energy_db, energy_std_db, energy_max_db, speech_ratio``);
        ``df.attrs["truth"]`` holds the planted effects.

    Raises:
        ValueError: bad sizes, unknown feature or term in ``effects``.

    Example:
        >>> w = simulate_windows(seed=1, effects={"f0_hz": {"phase": 10.0}})
    """
    if len(n_per_level) != len(LEVELS) or any(int(n) < 0 for n in n_per_level):
        raise ValueError(f"simulate_windows: n_per_level needs {len(LEVELS)} non-negative "
                         f"counts ({', '.join(LEVELS)}), got {n_per_level}")
    if not (hop_s > 0 and window_s > 0 and duration_s >= window_s):
        raise ValueError(f"simulate_windows: need hop_s > 0, window_s > 0 and duration_s >= "
                         f"window_s; got {hop_s}, {window_s}, {duration_s}")
    if not -1 < ar_rho < 1:
        raise ValueError(f"simulate_windows: ar_rho must be in (-1, 1), got {ar_rho}")
    if tail_df is not None and not tail_df > 2:
        raise ValueError(f"simulate_windows: tail_df must be > 2 (finite variance), got {tail_df}")
    if not caregiver_sd_ratio >= 1 or not 0 <= missing_share < 1:
        raise ValueError(f"simulate_windows: need caregiver_sd_ratio >= 1 and 0 <= missing_share "
                         f"< 1; got {caregiver_sd_ratio}, {missing_share}")
    if duration_by_level is not None and (len(duration_by_level) != len(LEVELS)
                                          or min(duration_by_level) < window_s):
        raise ValueError(f"simulate_windows: duration_by_level needs {len(LEVELS)} lengths >= "
                         f"window_s ({window_s} s), got {duration_by_level}")
    effects = {k: dict(v) for k, v in (effects or {}).items()}
    label_feats = {f"p_{lb}": lb for lb in labels}
    unknown = sorted(set(effects) - set(label_feats) - set(SIM_FEATURES))
    if unknown:
        raise ValueError(f"simulate_windows: effects for unknown feature(s) {unknown}; "
                         f"simulated: {sorted(label_feats) + sorted(SIM_FEATURES)}")
    rng = np.random.default_rng(seed)
    levels = np.repeat(np.array(LEVELS), [int(n) for n in n_per_level])
    n_cg = len(levels)
    if n_cg == 0:
        raise ValueError("simulate_windows: n_per_level sums to 0 caregivers")
    caregivers = np.array([f"p{i + 1:03d}" for i in range(n_cg)])
    n_rec = n_cg * len(PHASES)
    rec_cg = np.repeat(np.arange(n_cg), len(PHASES))          # recording -> caregiver idx
    rec_care = np.tile(np.arange(len(PHASES)), n_cg).astype(float)  # 0 control, 1 care
    rec_dur = (np.full(n_rec, float(duration_s)) if duration_by_level is None else
               np.array([float(duration_by_level[LEVEL_INDEX[lv]]) for lv in levels])[rec_cg])
    starts = np.arange(0.0, rec_dur.max() - window_s + 1e-9, hop_s)
    n_w = len(starts)
    inside = starts[None, :] + window_s <= rec_dur[:, None] + 1e-9  # (n_rec, n_w)
    # per-window covariates, shape (n_rec, n_w)
    care = np.repeat(rec_care[:, None], n_w, axis=1)
    score = np.repeat(np.array([LEVEL_INDEX[lv] for lv in levels])[rec_cg][:, None], n_w, 1)
    level = np.repeat(levels[rec_cg][:, None], n_w, axis=1)
    time = (starts + window_s / 2)[None, :] / rec_dur[:, None]
    # the violations draw from their own stream, so the default cohort is unchanged
    extra = np.random.default_rng([int(seed), 17])
    cg_scale = (np.exp(extra.uniform(-0.5, 0.5, n_cg) * math.log(caregiver_sd_ratio))
                if caregiver_sd_ratio > 1 else np.ones(n_cg))

    def draw(size: int | tuple[int, int]) -> np.ndarray:
        if tail_df is None:
            return rng.standard_normal(size)
        return rng.standard_t(tail_df, size) / math.sqrt(tail_df / (tail_df - 2))

    def noise(sd_cg: float, sd_rec: float, sd_w: float) -> np.ndarray:
        w = draw((n_rec, n_w))
        w[:, 0] /= math.sqrt(1 - ar_rho**2)
        ar = _signal.lfilter([1.0], [1.0, -ar_rho], w, axis=1) * math.sqrt(1 - ar_rho**2)
        return (sd_cg * draw(n_cg)[rec_cg][:, None]
                + sd_rec * draw(n_rec)[:, None] + sd_w * cg_scale[rec_cg][:, None] * ar)

    def planted(feature: str) -> np.ndarray:
        out = np.zeros((n_rec, n_w))
        for term, value in effects.get(feature, {}).items():
            prod = np.ones((n_rec, n_w))
            for factor in term.split(":"):
                prod = prod * _term_factor(factor.strip(), care=care, score=score,
                                           level=level, time=time)
            out += float(value) * prod
        return out

    cols: dict[str, np.ndarray] = {}
    logits = np.stack([_SIM_LABEL_BASE.get(lb, 0.0) + noise(0.5, 0.3, 1.0)
                       + planted(f"p_{lb}") for lb in labels], axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=-1, keepdims=True)
    for j, lb in enumerate(labels):
        cols[f"p_{lb}"] = prob[..., j]
    latent = {}
    for feat, (_kind, base, s_cg, s_rec, s_w) in SIM_FEATURES.items():
        latent[feat] = base + noise(s_cg, s_rec, s_w) + planted(feat)
    speech = 1.0 / (1.0 + np.exp(-latent["speech_ratio"]))
    voiced = speech / (1.0 + np.exp(-(1.0 + 0.8 * rng.standard_normal((n_rec, n_w)))))
    f0 = np.where(voiced >= unvoiced_below, latent["f0_hz"], np.nan)
    f0_std = np.exp(np.log(22.0) + 0.3 * rng.standard_normal((n_rec, n_w)))
    energy_std = np.abs(4.0 + rng.standard_normal((n_rec, n_w)))
    cols.update({
        "f0_hz": f0,
        "f0_mean_hz": f0 + 2.0 + 3.0 * rng.standard_normal((n_rec, n_w)),
        "f0_std_hz": np.where(np.isnan(f0), np.nan, f0_std),
        "voiced_ratio": voiced,
        "energy_db": latent["energy_db"],
        "energy_std_db": energy_std,
        "energy_max_db": latent["energy_db"] + 2.0 * energy_std,
        "speech_ratio": speech,
    })
    rec_names = np.array([f"{caregivers[c]}_{PHASES[int(p)]}" for c, p in zip(rec_cg, rec_care)])
    keep = inside.copy()
    if missing_share > 0:
        keep &= (extra.random(n_rec) >= missing_share)[:, None]
    flat = keep.reshape(-1)
    df = pd.DataFrame({
        "recording": np.repeat(rec_names, n_w)[flat],
        "caregiver": np.repeat(caregivers[rec_cg], n_w)[flat],
        "level": np.repeat(levels[rec_cg], n_w)[flat],
        "phase": np.repeat(np.array(PHASES)[rec_care.astype(int)], n_w)[flat],
        "start_s": np.tile(starts, n_rec)[flat],
        "end_s": np.tile(starts + window_s, n_rec)[flat],
        **{k: v.reshape(-1)[flat] for k, v in cols.items()},
    }).reset_index(drop=True)
    df.attrs["truth"] = {"seed": seed, "effects": effects, "n_per_level": list(n_per_level),
                         "ar_rho": ar_rho, "tail_df": tail_df,
                         "caregiver_sd_ratio": caregiver_sd_ratio,
                         "duration_by_level": (list(duration_by_level) if duration_by_level
                                               else None),
                         "missing_share": missing_share, "effect_units": {
                             **{f: "logit" for f in label_feats}, "speech_ratio": "logit",
                             "f0_hz": "Hz", "energy_db": "dB"}}
    return df

