"""Stage 02's candidates: speaker-grouped K-fold CV over the training speakers, then the final bundle.

Every candidate named in ``params/02_train.yaml`` (``candidates``: ``{name, family, ...}``)
is a family (:data:`FAMILIES`):

- ``cnn``: a log-mel network of :data:`ser.models.registry.ARCHITECTURES` trained by
  :func:`ser.train.loop.train` (options: any of :data:`CNN_OPTIONS`, defaulting to the stage's);
- ``classical``: functionals (``feature_set`` ``compare``, ``egemaps`` or ``mfcc``, or a list
  of them: early fusion, the sets side by side) of the model window + ``estimator``
  (``svm`` = linear SVM, ``svm_rbf``, ``logreg``, ``rf``, ``lda`` = shrinkage LDA), optionally ``speaker_norm`` and
  ``select_k`` (ANOVA feature selection inside every fit), tuned by speaker-grouped inner CV
  (:class:`ser.models.classical.estimator.ClassicalModel`);
- ``ensemble``: the weighted mean of other candidates' probabilities (``members``,
  optional ``weights``), :mod:`ser.models.ensemble_bundle`.

The training speakers are those of the ``train`` and ``val`` partitions of
``utterances.csv``; the test speakers are never read. :func:`speaker_folds` assigns each
training speaker to one of ``cv_folds`` folds (a function of the speakers and the seed
only, so every candidate, and an ensemble's members, share the folds). For each fold
the candidate is fitted on the other folds' speakers and predicts the fold's utterances
(their centre window, as in stage 03): the **out-of-fold (OOF)** probabilities, one row
per training utterance, saved as ``oof_predictions.csv`` in the bundle folder
(``path, speaker, fold, label, p_<label>…``, before any calibration). A CNN fold stops
early on the original validation speakers that are not in the held-out fold (or, when
all of them are, on one other training speaker). An ensemble's OOF is the weighted mean
of its members' OOF. The final model is then fitted on all training speakers (a CNN as
stage 02 always did: trained on ``train``, stopped early on ``val``) and written to
``results/models/<name>/``. Cost: a candidate is fitted ``cv_folds + 1`` times.

With several corpora, ``cv_by="corpus"`` makes each corpus one fold (:func:`corpus_folds`):
the out-of-fold predictions are then leave-one-corpus-out predictions, so stage 03 selects
the model that transfers best to a corpus it has never heard, and fits its calibration on
such predictions, which is the situation of the care recordings.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ser.core import atomic
from ser.models.bundle import load_bundle
from ser.models.classical.classes import aligned_proba
from ser.models.classical.estimator import ESTIMATORS, ClassicalModel, check_select_k
from ser.models.classical.features import FEATURE_SETS, signal_features
from ser.models.classical.writer import save_classical_bundle
from ser.models.deployed import DEPLOYED, DEPLOYED_FILE
from ser.models.ensemble_bundle import save_ensemble_bundle
from ser.models.window import fit_window, window_samples
from ser.signal import audio, augment, pitchnorm
from ser.train.evaluation import speaker_reference
from ser.train.loop import train, utterances_seen

#: Candidate families.
FAMILIES: tuple[str, ...] = ("cnn", "classical", "ensemble")
#: Options of a ``cnn`` candidate (keyword arguments of :func:`ser.train.loop.train`).
CNN_OPTIONS: tuple[str, ...] = (
    "arch", "arch_params", "features", "epochs", "batch_size", "lr", "weight_decay", "patience",
    "augment", "mixup_alpha", "class_weighting", "min_duration_s", "num_workers", "device", "pitch_norm_hz",
)
#: Options of a ``classical`` candidate.
CLASSICAL_OPTIONS: tuple[str, ...] = ("feature_set", "estimator", "speaker_norm", "param_grid", "inner_folds",
                                      "pitch_norm_hz", "select_k", "speed_perturb")
#: Options of an ``ensemble`` candidate.
ENSEMBLE_OPTIONS: tuple[str, ...] = ("members", "weights")
#: Short names of classical feature sets and estimators accepted in params.
FEATURE_SET_NAMES: dict[str, str] = {"mfcc": "mfcc_stats", **{s: s for s in FEATURE_SETS}}
ESTIMATOR_NAMES: dict[str, str] = {"svm": "svm_linear", **{e: e for e in ESTIMATORS}}
#: Stage 02's list of this run's candidates, read by stage 03.
CANDIDATES_FILE = "candidates.json"
#: How stage 02 groups the training utterances into cross-validation folds.
CV_BY: tuple[str, ...] = ("speaker", "corpus")
#: Out-of-fold predictions in each candidate's bundle folder.
OOF_FILE = "oof_predictions.csv"


@dataclass(frozen=True)
class Candidate:
    """One candidate model: a bundle folder ``name``, a :data:`FAMILIES` member and its options."""

    name: str
    family: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_candidates(specs: Sequence[Mapping[str, Any]], *, default_name: str) -> list[Candidate]:
    """Check the ``candidates`` param of stage 02.

    Args:
        specs: ``[{name, family, ...options}]``; empty: one ``cnn`` candidate ``default_name``.
        default_name: the stage's ``model_name``.

    Returns:
        The candidates, in the given order (an ensemble after its members).

    Raises:
        ValueError: a missing or repeated name, an unknown family or option, an unknown
            feature set or estimator, or an ensemble whose members are not earlier candidates.
    """
    if not specs:
        return [Candidate(str(default_name), "cnn", {})]
    out: list[Candidate] = []
    allowed = {"cnn": CNN_OPTIONS, "classical": CLASSICAL_OPTIONS, "ensemble": ENSEMBLE_OPTIONS}
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "name" not in spec or "family" not in spec:
            raise ValueError(f"candidates[{i}] must be a mapping with 'name' and 'family'; got {spec!r}")
        name, family = str(spec["name"]), str(spec["family"])
        if not name or Path(name).name != name or name in (DEPLOYED, Path(DEPLOYED_FILE).stem, ".", ".."):
            raise ValueError(f"candidates[{i}]: name {name!r} must be a plain folder name "
                             "other than 'deployed'")
        if any(c.name == name for c in out):
            raise ValueError(f"candidates: the name {name!r} is used twice")
        if family not in FAMILIES:
            raise ValueError(f"candidates[{i}] ({name}): family {family!r} is unknown; "
                             f"use {', '.join(FAMILIES)}")
        opts = {k: v for k, v in spec.items() if k not in ("name", "family")}
        unknown = sorted(set(opts) - set(allowed[family]))
        if unknown:
            raise ValueError(f"candidates[{i}] ({name}): {unknown} are not options of family {family}; "
                             f"use {', '.join(allowed[family])}")
        if family == "classical":
            given, est = opts.get("feature_set", "egemaps"), str(opts.get("estimator", "svm"))
            sets = [str(given)] if isinstance(given, str) else [str(s) for s in given]
            for fs in sets:
                if fs not in FEATURE_SET_NAMES:
                    raise ValueError(f"candidates[{i}] ({name}): feature_set {fs!r} is unknown; "
                                     f"use {', '.join(FEATURE_SET_NAMES)} (or a list of them)")
            canon = [FEATURE_SET_NAMES[fs] for fs in sets]
            if not canon or len(set(canon)) != len(canon):
                raise ValueError(f"candidates[{i}] ({name}): feature_set {given!r} must name one or more "
                                 "different feature sets")
            if est not in ESTIMATOR_NAMES:
                raise ValueError(f"candidates[{i}] ({name}): estimator {est!r} is unknown; "
                                 f"use {', '.join(ESTIMATOR_NAMES)}")
            opts["feature_set"] = canon[0] if isinstance(given, str) else canon
            opts["estimator"] = ESTIMATOR_NAMES[est]
            opts["speaker_norm"] = bool(opts.get("speaker_norm", False))
            if "select_k" in opts:
                try:
                    opts["select_k"] = check_select_k(opts["select_k"])
                except ValueError as e:
                    raise ValueError(f"candidates[{i}] ({name}): {e}") from None
            if "speed_perturb" in opts:
                try:
                    opts["speed_perturb"] = check_speed_factors(opts["speed_perturb"])
                except ValueError as e:
                    raise ValueError(f"candidates[{i}] ({name}): {e}") from None
        if family == "ensemble":
            members = opts.get("members")
            earlier = {c.name for c in out}
            if not isinstance(members, list) or len(members) < 2 or not set(map(str, members)) <= earlier:
                raise ValueError(f"candidates[{i}] ({name}): members must list at least 2 names of "
                                 f"candidates given before it ({', '.join(sorted(earlier)) or 'none'}); "
                                 f"got {members!r}")
            opts["members"] = [str(m) for m in members]
        out.append(Candidate(name, family, opts))
    return out


def speaker_folds(speakers: Sequence[Any], *, n_folds: int, seed: int) -> dict[str, int]:
    """Assign each speaker to one of ``n_folds`` folds: the unique speakers (as text, sorted)
    are shuffled with ``seed`` and dealt out in turn, so fold sizes differ by at most one.

    Raises:
        ValueError: ``n_folds`` < 2 or more than the number of speakers.
    """
    unique = sorted({str(s) for s in speakers})
    if int(n_folds) < 2 or int(n_folds) > len(unique):
        raise ValueError(f"cv_folds={n_folds} must be between 2 and the number of training speakers "
                         f"({len(unique)})")
    order = np.random.default_rng(int(seed)).permutation(len(unique))
    return {unique[j]: i % int(n_folds) for i, j in enumerate(order)}


def corpus_folds(rows: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """Leave-one-corpus-out folds: each training speaker's fold is its corpus.

    With these folds the out-of-fold predictions of every utterance come from a model that
    never heard its corpus (its language, actors, sentences and microphone), so stage 03
    selects and calibrates the candidates on corpora they have never heard.

    Args:
        rows: :func:`training_rows` (``speaker`` and ``corpus`` columns).

    Returns:
        ``({speaker: fold}, corpus names in fold order)``; folds follow the sorted corpus names.

    Raises:
        ValueError: no ``corpus`` column, fewer than 2 corpora, or a speaker in two corpora.
    """
    if "corpus" not in rows.columns:
        raise ValueError("cv_by='corpus' needs the utterances table's corpus column (stage 01 with "
                         "several corpora)")
    per = rows.groupby("speaker")["corpus"].agg(lambda s: sorted({str(c) for c in s}))
    shared = per[per.map(len) > 1]
    if len(shared):
        raise ValueError(f"cv_by='corpus': speakers {list(shared.index[:5])} appear in more than one "
                         "corpus; key them by corpus (stage 01 does so when it merges corpora)")
    names = sorted({c[0] for c in per})
    if len(names) < 2:
        raise ValueError(f"cv_by='corpus' needs training speakers of at least 2 corpora; got {names}")
    return {str(s): names.index(c[0]) for s, c in per.items()}, names


def training_rows(utterances: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """The training speakers' utterances (``split`` train or val) with a label in ``labels``:
    ``path, speaker, label, split`` (speaker and path as text; and ``corpus`` when the table
    has it), in table order.

    Raises:
        ValueError: missing columns, or no such utterance.
    """
    missing = [c for c in ("path", "speaker", "label", "split") if c not in utterances.columns]
    if missing:
        raise ValueError(f"utterances table lacks columns {missing}; it must come from stage 01_preprocess")
    rows = utterances[utterances["split"].isin(["train", "val"]) & utterances["label"].isin(list(labels))]
    if rows.empty:
        raise ValueError(f"no train/val utterance with a label in {list(labels)}")
    out = rows[["path", "speaker", "label", "split"] + (["corpus"] if "corpus" in rows.columns else [])].copy()
    out["path"], out["speaker"] = out["path"].astype(str), out["speaker"].astype(str)
    return out.reset_index(drop=True)


def check_speed_factors(factors: Any) -> list[float]:
    """The ``speed_perturb`` option of a classical candidate: distinct speed factors in
    :data:`ser.signal.augment.SPEED_RANGE`, none equal to 1 (``None`` or ``[]``: no copies).

    Raises:
        ValueError: anything else.
    """
    lo, hi = augment.SPEED_RANGE
    msg = (f"speed_perturb must list distinct speed factors in [{lo:g}, {hi:g}] other than 1, "
           f"e.g. [0.9, 1.1]; got {factors!r}")
    if factors is None:
        return []
    if not isinstance(factors, (list, tuple)):
        raise ValueError(msg)
    out = []
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not lo <= f <= hi or f == 1 or f in out:
            raise ValueError(msg)
        out.append(float(f))
    return out


def centre_windows(rows: pd.DataFrame, *, sample_rate: int, n_samples: int, pitch_norm_hz: float = 0.0,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The centre window (:func:`ser.models.window.fit_window`) of each utterance, pitch-normalised
    per speaker when ``pitch_norm_hz`` > 0 (:class:`ser.signal.pitchnorm.SpeakerLoader`).

    Returns:
        ``(windows, ok)``: float32 ``[n_ok, n_samples]`` and a bool ``[len(rows)]`` mask of the
        rows that could be read.
    """
    windows, ok = centre_windows_at(rows, sample_rate=sample_rate, n_samples=n_samples,
                                    pitch_norm_hz=pitch_norm_hz, progress=progress)
    return windows[1.0], ok


def centre_windows_at(rows: pd.DataFrame, *, sample_rate: int, n_samples: int, pitch_norm_hz: float = 0.0,
                      progress: bool = False, speeds: Sequence[float] = (1.0,),
                      ) -> tuple[dict[float, np.ndarray], np.ndarray]:
    """:func:`centre_windows` of each utterance played at each of ``speeds`` (1: as recorded;
    otherwise :func:`ser.signal.augment.speed`, after the pitch normalisation), each utterance
    read and pitch-normalised once for all of them.

    Returns:
        ``({speed: float32 [n_ok, n_samples]}, ok)``, ``ok`` the bool ``[len(rows)]`` mask of
        the rows that could be read (the same for every speed).
    """
    load = pitchnorm.SpeakerLoader(rows, sample_rate=sample_rate, target_hz=pitch_norm_hz)
    out: dict[float, list[np.ndarray]] = {float(f): [] for f in speeds}
    ok = np.zeros(len(rows), bool)
    for i, r in enumerate(tqdm(rows.itertuples(index=False), total=len(rows), desc="windows", unit="utt",
                               disable=not progress)):
        try:
            wave = load(r.path, r.speaker)
        except (audio.AudioError, OSError, ValueError):
            continue
        for f, acc in out.items():
            acc.append(fit_window(wave if f == 1.0 else augment.speed(wave, sample_rate, factor=f), n_samples))
        ok[i] = True
    return ({f: np.stack(w).astype(np.float32) if w else np.zeros((0, n_samples), np.float32)
             for f, w in out.items()}, ok)


def bundle_proba(bundle: Any, rows: pd.DataFrame, *, calibrated: bool = False, batch_size: int = 64,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the centre window of each utterance, as stage 03 scores them.

    A speaker-normalised bundle gets each speaker's reference from that speaker's windows
    in ``rows``. Pitch normalisation per speaker when the bundle wants it.

    Args:
        bundle: any probability bundle of :func:`ser.models.bundle.load_bundle`.
        rows: ``path, speaker`` (and anything else).
        calibrated: apply the bundle's stored calibration (default: the raw model).
        batch_size: windows per forward pass.
        progress: tqdm bar over the files.

    Returns:
        ``(proba, ok)``: float64 ``[n_ok, n_labels]`` and the bool mask of readable rows.
    """
    b = bundle if calibrated else bundle.uncalibrated()
    windows, ok = centre_windows(rows, sample_rate=b.sample_rate, n_samples=b.window_samples,
                                 pitch_norm_hz=b.pitch_norm_hz, progress=progress)
    proba = np.zeros((len(windows), len(b.labels)))
    speakers = rows["speaker"].astype(str).to_numpy()[ok]
    for spk in pd.unique(speakers):
        sel = speakers == spk
        proba[sel] = speaker_reference(b, windows[sel]).predict_proba(windows[sel], batch_size=batch_size)
    return proba, ok


def oof_frame(rows: pd.DataFrame, folds: Mapping[str, int], proba: np.ndarray,
              labels: Sequence[str]) -> pd.DataFrame:
    """``path, speaker, fold, label, p_<label>…`` of out-of-fold probabilities ``[len(rows), k]``."""
    out = rows[["path", "speaker"]].copy()
    out["fold"] = out["speaker"].map(folds).astype(int)
    out["label"] = rows["label"].to_numpy()
    for j, lab in enumerate(labels):
        out[f"p_{lab}"] = proba[:, j]
    return out.reset_index(drop=True)


def _store_selection(bundle_dir: Path, info: Mapping[str, Any]) -> None:
    meta = json.loads((bundle_dir / "model.json").read_text(encoding="utf-8"))
    meta["selection"] = dict(info)
    atomic.atomic_write_json(bundle_dir / "model.json", meta)


def _split_of(utterances: pd.DataFrame, labels: Sequence[str]) -> dict[str, list[str]]:
    rows = utterances[utterances["label"].isin(list(labels))]
    return {p: sorted(rows.loc[rows["split"] == p, "speaker"].astype(str).unique().tolist())
            for p in ("train", "val", "test")}


def _fit_classical(c: Candidate, rows: pd.DataFrame, folds: Mapping[str, int], *, labels: list[str],
                   split: Mapping[str, list[str]], window_s: float, sample_rate: int, pitch_norm_hz: float,
                   seed: int, out: Path, cache: dict[tuple[Any, ...], Any], progress: bool,
                   balance_corpora: bool = True) -> pd.DataFrame:
    o = c.options
    pnorm = pitchnorm.check_target(o.get("pitch_norm_hz", pitch_norm_hz))
    n = window_samples(window_s, sample_rate)
    key = (sample_rate, n, pnorm)
    sets = [o["feature_set"]] if isinstance(o["feature_set"], str) else list(o["feature_set"])
    factors = list(o.get("speed_perturb") or [])
    def wkey(f: float) -> tuple[Any, ...]:
        return key if f == 1.0 else (*key, "speed", f)

    missing = [f for f in [1.0, *factors] if wkey(f) not in cache]
    if missing:  # each utterance read and pitch-normalised once for every speed still missing
        windows_at, ok = centre_windows_at(rows, sample_rate=sample_rate, n_samples=n, pitch_norm_hz=pnorm,
                                           progress=progress, speeds=missing)
        cache.update({wkey(f): (w, ok) for f, w in windows_at.items()})
    parts = []  # (rows used, features, speed factor): the originals, then each factor's copies
    for f in [1.0, *factors]:
        windows, ok = cache[wkey(f)]
        for fs in sets:
            if (*wkey(f), fs) not in cache:
                cache[(*wkey(f), fs)] = signal_features(windows, feature_set=fs, sample_rate=sample_rate)
        # several sets: early fusion, in the listed order
        parts.append((rows[ok].reset_index(drop=True), np.hstack([cache[(*wkey(f), fs)] for fs in sets]), f))
    used = parts[0][0]
    X = np.vstack([p[1] for p in parts])
    y = np.concatenate([p[0]["label"].to_numpy() for p in parts])
    g = np.concatenate([p[0]["speaker"].to_numpy() for p in parts])
    # a speed copy is z-scored as a speaker of its own; it stays in its speaker's folds and is never scored
    norm_g = np.concatenate([p[0]["speaker"].astype(str).to_numpy() if f == 1.0
                             else (p[0]["speaker"].astype(str) + f"@{f:g}").to_numpy() for p in parts])
    scored = np.arange(len(X)) < len(used)
    fold = pd.Series(g).map(folds).to_numpy()
    inner = int(o.get("inner_folds", 3))
    # several corpora: each (corpus, class) weighs the same in every fit, as the CNN's epochs
    # give each corpus the same share (ser.models.classical.estimator.balance_weights)
    strata = (np.concatenate([p[0]["corpus"].fillna("").astype(str).to_numpy() for p in parts])
              if balance_corpora and "corpus" in used else None)

    def fit(sel: np.ndarray) -> ClassicalModel:
        m = ClassicalModel(estimator=o["estimator"], speaker_norm=o["speaker_norm"], seed=seed,
                           select_k=o.get("select_k"))
        return m.fit_grid(X[sel], y[sel], g[sel], param_grid=o.get("param_grid"),
                          inner_folds=min(inner, len(set(g[sel]))),
                          strata=None if strata is None else strata[sel],
                          norm_groups=norm_g[sel] if factors else None, scored=scored[sel] if factors else None)

    proba = np.zeros((len(used), len(labels)))
    for k in sorted(set(fold)):
        m = fit(fold != k)
        te = (fold == k) & scored
        proba[te[:len(used)]] = aligned_proba(m.predict_proba(X[te], g[te]), [str(x) for x in m.classes_],
                                              labels)
    final = fit(np.ones(len(X), bool))
    save_classical_bundle(out, final, labels=labels, feature_set=o["feature_set"], sample_rate=sample_rate,
                          window_s=window_s, split=split, pitch_norm_hz=pnorm,
                          train_params={"n_train": len(used), "seed": seed, "family": "classical",
                                        "feature_set": o["feature_set"], "estimator": o["estimator"],
                                        "utterances_seen": utterances_seen(used, labels),
                                        "balance_corpora": final.balanced_strata_ is not None,
                                        "speed_perturb": factors, "n_speed_copies": int(len(X) - len(used))})
    return oof_frame(used, folds, proba, labels)


def _fit_cnn(c: Candidate, rows: pd.DataFrame, folds: Mapping[str, int], *, utterances: pd.DataFrame,
             labels: list[str], defaults: Mapping[str, Any], seed: int, out: Path, resume: bool,
             progress: bool) -> pd.DataFrame:
    kw = {**dict(defaults), **c.options}
    work = out.parent / f".{out.name}_cv"
    val_speakers = set(rows.loc[rows["split"] == "val", "speaker"])
    speakers = rows["speaker"].to_numpy()
    fold = rows["speaker"].map(folds).to_numpy()
    names = sorted(folds)
    order = [names[j] for j in np.random.default_rng(seed + 1).permutation(len(names))]  # fallback stoppers
    proba = np.full((len(rows), len(labels)), np.nan)
    for k in sorted(set(fold)):
        held = fold == k
        rest = [s for s in order if folds[s] != k]
        stop = [s for s in rest if s in val_speakers] or rest[:1]
        table = rows.assign(split=np.where(held, "test", np.where(np.isin(speakers, stop), "val", "train")))
        fold_dir = work / f"fold{k}"
        try:
            train(table, out_dir=fold_dir, labels=labels, seed=seed, resume=False, progress=progress, **kw)
            p, ok = bundle_proba(load_bundle(fold_dir), rows[held])
        finally:
            shutil.rmtree(fold_dir, ignore_errors=True)
        idx = np.flatnonzero(held)[ok]
        proba[idx] = p
    shutil.rmtree(work, ignore_errors=True)
    # the final network: train partition, early stopping on val (the test rows only name the split)
    train(utterances, out_dir=out, labels=labels, seed=seed, resume=resume, progress=progress, **kw)
    done = ~np.isnan(proba).any(axis=1)
    return oof_frame(rows[done], folds, proba[done], labels)


def _ensemble_oof(c: Candidate, oofs: Mapping[str, pd.DataFrame], labels: list[str]) -> pd.DataFrame:
    members = c.options["members"]
    weights = np.asarray(c.options.get("weights") or [1.0] * len(members), dtype=np.float64)
    if weights.shape != (len(members),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"candidate {c.name}: weights must be {len(members)} non-negative numbers")
    weights = weights / weights.sum()
    common = set.intersection(*(set(oofs[m]["path"]) for m in members))
    frames = [oofs[m][oofs[m]["path"].isin(common)].set_index("path") for m in members]
    base = frames[0]
    cols = [f"p_{lab}" for lab in labels]
    p = sum(w * f.loc[base.index, cols].to_numpy(np.float64) for w, f in zip(weights, frames, strict=True))
    out = base[["speaker", "fold", "label"]].copy()
    out[cols] = p
    return out.reset_index()


def train_candidates(
    utterances: pd.DataFrame,
    candidates: Sequence[Candidate],
    *,
    models_dir: Path,
    labels: Sequence[str],
    window_s: float,
    sample_rate: int,
    cv_folds: int = 3,
    cv_by: str = "speaker",
    seed: int = 0,
    pitch_norm_hz: float = 0.0,
    cnn_defaults: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    balance_corpora: bool = True,
) -> pd.DataFrame:
    """Cross-validate and fit every candidate; write the bundles and ``candidates.json``.

    Args:
        utterances: ``utterances.csv`` (only the train and val partitions are read).
        candidates: from :func:`parse_candidates`.
        models_dir: ``results/models``; each candidate goes to ``models_dir / name``.
        labels: class labels, model output order.
        window_s: model window (s); sample_rate: Hz.
        cv_folds: speaker-grouped folds over the training speakers (``cv_by="speaker"``).
        cv_by: ``"speaker"`` (``cv_folds`` folds of training speakers) or ``"corpus"`` (one fold
            per corpus, :func:`corpus_folds`: out-of-fold = leave-one-corpus-out).
        seed: folds, weights, crops.
        pitch_norm_hz: pitch register of every family (0: off); a candidate may override it.
        cnn_defaults: :func:`ser.train.loop.train` options of ``cnn`` candidates (window_s,
            sample_rate and pitch_norm_hz included), overridden by the candidate's own.
        resume: resume the final CNN trainings from their checkpoints.
        progress: tqdm bars.
        balance_corpora: with training rows from 2+ corpora, classical candidates weigh every
            (corpus, class) the same in each fit (the CNN gets its own ``balance_corpora`` through
            ``cnn_defaults``); no effect with one corpus.

    Returns:
        One row per candidate: ``model, family, seconds, n_oof, cv_folds`` (also in
        ``models_dir / candidates.json`` with the folds, ``cv_by`` and the fold names).

    Raises:
        ValueError: an unknown ``cv_by``, or folds that cannot be made (see
        :func:`speaker_folds`, :func:`corpus_folds`).
    """
    if cv_by not in CV_BY:
        raise ValueError(f"cv_by must be one of {', '.join(CV_BY)}; got {cv_by!r}")
    labels = [str(x) for x in labels]
    rows = training_rows(utterances, labels)
    if cv_by == "corpus":
        folds, fold_names = corpus_folds(rows)
        cv_folds = len(fold_names)
    else:
        folds = speaker_folds(rows["speaker"], n_folds=cv_folds, seed=seed)
        fold_names = [f"fold {k}" for k in range(int(cv_folds))]
    split = _split_of(utterances, labels)
    defaults = {"window_s": window_s, "sample_rate": sample_rate, "pitch_norm_hz": pitch_norm_hz,
                **dict(cnn_defaults or {})}
    oofs: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    cache: dict[tuple[Any, ...], Any] = {}
    records = []
    for c in candidates:
        out = Path(models_dir) / c.name
        t0 = time.perf_counter()
        if c.family == "classical":
            oof = _fit_classical(c, rows, folds, labels=labels, split=split, window_s=window_s,
                                 sample_rate=sample_rate, pitch_norm_hz=pitch_norm_hz, seed=seed, out=out,
                                 cache=cache, progress=progress, balance_corpora=balance_corpora)
        elif c.family == "cnn":
            oof = _fit_cnn(c, rows, folds, utterances=utterances, labels=labels, defaults=defaults, seed=seed,
                           out=out, resume=resume, progress=progress)
        else:
            oof = _ensemble_oof(c, oofs, labels)
            save_ensemble_bundle(out, members=c.options["members"], weights=c.options.get("weights"),
                                 load_member=load_bundle, split=split,
                                 train_params={"family": "ensemble", "seed": seed})
        own = time.perf_counter() - t0
        # an ensemble costs what its members cost (their CV and final fits) plus its own step
        members = c.options["members"] if c.family == "ensemble" else []
        seconds[c.name] = own + sum(seconds[m] for m in members)
        oofs[c.name] = oof
        atomic.atomic_write_csv(out / OOF_FILE, oof)
        info = {"family": c.family, "cv_folds": int(cv_folds), "cv_by": cv_by, "seed": int(seed),
                "seconds": round(seconds[c.name], 2), "n_oof": len(oof), "oof": OOF_FILE,
                "options": c.options}
        _store_selection(out, info)
        records.append({"model": c.name, **{k: info[k] for k in ("family", "seconds", "n_oof", "cv_folds")}})
    table = pd.DataFrame(records)
    atomic.atomic_write_json(Path(models_dir) / CANDIDATES_FILE, {
        "candidates": [{"name": c.name, "family": c.family} for c in candidates], "cv_folds": int(cv_folds),
        "cv_by": cv_by, "fold_names": fold_names, "seed": int(seed), "folds": folds, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return table
