"""Training loop: utterances table -> model bundle (weights, ``model.json``, ``history.csv``).

Data. Each audio file is decoded and resampled once (:func:`ser.signal.audio.load`: mono, at
``sample_rate``) and cached on disk under ``paths.results_dir() / "cache" / "waveforms"``,
keyed by the SHA-256 of the file's bytes, the sample rate and :data:`WAVE_CACHE_VERSION`,
so a second run (another architecture, a resumed run) skips decoding. The waveforms
stay in memory; every epoch cuts one window per utterance with
:func:`ser.models.window.fit_window` and augments it on the fly (random position, white noise;
on the batch's spectrograms a random frequency warp and SpecAugment; optional mixup
of waveforms and targets), so only the log-mel front end runs per step. A frozen-embedding
model (arch ``ssl_frozen``) trains instead on its backbone's layer statistics, computed
once per utterance on fixed windows (:mod:`ser.train.embedding_cache`): epochs run the head alone.

Bad input never stops a run mid-epoch, because all audio is read before the first one.
What is set aside goes to ``train_errors.csv`` (``path, reason``) and is logged:

- files that cannot be read (missing, truncated, not audio);
- utterances shorter than ``min_duration_s`` (default 0.25 s): too little speech to
  label. Longer utterances that are still shorter than the window are zero-padded on
  both sides (centred for validation, at a random position for training);
- rows whose label is not in ``labels`` (the file is named; training goes on).

Loss and selection. Cross-entropy, class-weighted by ``n / (k * n_c)`` from the training
counts (``class_weighting``). Optimiser: AdamW; the learning rate halves when the
validation UAR stalls (ReduceLROnPlateau); training stops after ``patience`` epochs
without a strictly better validation UAR, and the weights of the best epoch (highest
UAR, ties broken by lower validation loss) go into the bundle. ``history.csv`` holds
the loss and metric curves.

Reproducibility and resuming. All randomness is derived from ``(seed, epoch, rank)``:
weights from ``seed``; per epoch the shuffling (``DistributedSampler.set_epoch``),
each window's crop and noise (keyed by ``(seed, epoch, index)``, so the number of
loader workers does not matter), SpecAugment, mixup and dropout. After every epoch
``checkpoint.pt`` (model, optimiser, scheduler, epoch, best weights, early-stopping
state, history, RNG states) is written atomically; ``resume=True`` continues from it
and ends with the same bundle as an uninterrupted run. A checkpoint written with
other settings is refused (``epochs`` and ``patience`` may change between runs). The
checkpoint is deleted once the bundle is written.

Hardware. On CUDA the forward pass runs under bf16 autocast and a pinned-memory
DataLoader with worker processes (``num_workers``; default 4 on CUDA, 0 on CPU)
prepares the next batches while the GPU works. Several GPUs (or CPU processes) are
used through PyTorch's own launcher, ``torchrun``; when ``WORLD_SIZE > 1`` the model is
wrapped in DistributedDataParallel, each process reads its share of every epoch
(DistributedSampler; ``batch_size`` is per process), every process validates on the
whole validation set and follows rank 0's early-stopping decision, and rank 0 alone
writes files (it also fills the waveform cache before the others read it)::

    torchrun --standalone --nproc_per_node=4 -m ser.train.loop \\
        --utterances results/tables/utterances.csv --out results/models/ddp_cnn \\
        --params params/02_train.yaml

(the module's command line takes the stage-02 parameters file; see ``python -m
ser.train.loop --help``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from ser.core import atomic, provenance
from ser.core import paths as _paths
from ser.models.bundle import save_bundle
from ser.models.registry import build_model, resolve_device, resolved_arch_params
from ser.models.window import features_config, fit_window, window_samples
from ser.signal import audio, pitchnorm
from ser.signal.spectrogram import freq_warp, spec_augment
from ser.train import embedding_cache
from ser.train.metrics import uar
from ser.train.sampling import CorpusBalancedSampler, balanced_class_counts

log = logging.getLogger(__name__)

#: Augmentation used when ``augment=True`` (recorded in ``model.json``); a mapping given
#: as ``augment`` overrides some of these.
DEFAULT_AUGMENT: dict[str, Any] = {
    "random_crop": True,          # always on in training, see fit_window
    "noise_prob": 0.5,            # share of training windows that get white noise
    "snr_db": [10.0, 30.0],       # SNR drawn uniformly in this range (dB)
    "freq_masks": 2, "max_freq": 8,    # SpecAugment frequency masks (mel bins)
    "time_masks": 2, "max_time": 20,   # SpecAugment time masks (frames)
    "freq_warp": 0.1,             # random stretch of the mel axis by up to +-10 % (0: off)
}
#: Columns the utterances table must have.
REQUIRED_COLUMNS = ("path", "label", "speaker", "split")
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_uar", "lr", "seconds"]
ERROR_COLUMNS = ["path", "reason"]
#: Bump when the decoding of cached waveforms changes (invalidates the cache).
WAVE_CACHE_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- data


def _cache_key(path: str, sample_rate: int) -> str:
    h = hashlib.sha256(f"v{WAVE_CACHE_VERSION}:{int(sample_rate)}:".encode())
    h.update(provenance.file_sha256(path).encode())
    return h.hexdigest()




def load_waveforms(
    paths: Iterable[str | os.PathLike[str]], *, sample_rate: int, progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Read each distinct file once as mono float32 at ``sample_rate``, through a disk cache.

    Args:
        paths: audio files (duplicates are read once).
        sample_rate: target rate in Hz.
        progress: show a tqdm bar.
        cache_dir: cache folder; decoded waveforms go to ``<cache_dir>/waveforms/<key>.npy``
            with ``key`` = SHA-256 of (cache version, sample rate, file bytes), written
            atomically. ``None``: no cache.

    Returns:
        ``(waves, errors)``: ``waves`` maps ``str(path)`` to a float32 ``[T]`` array;
        ``errors`` has columns ``path, reason`` for files that failed (never raised).
    """
    unique = list(dict.fromkeys(str(p) for p in paths))
    folder = None if cache_dir is None else Path(cache_dir) / "waveforms"
    waves: dict[str, np.ndarray] = {}
    errors: list[dict[str, str]] = []
    for p in tqdm(unique, desc="load audio", unit="file", disable=not progress):
        try:
            if folder is None:
                waves[p] = audio.load(p, sample_rate=sample_rate)[0]
                continue
            if not Path(p).is_file():  # let audio.load word the error
                audio.load(p, sample_rate=sample_rate)
            cached = folder / f"{_cache_key(p, sample_rate)}.npy"
            if cached.is_file():
                try:
                    waves[p] = np.load(cached)
                    continue
                except (OSError, ValueError):  # a damaged cache entry is rebuilt
                    pass
            waves[p] = audio.load(p, sample_rate=sample_rate)[0]
            atomic.atomic_save_npy(cached, waves[p])
        except (audio.AudioError, OSError, ValueError, RuntimeError) as err:
            errors.append({"path": p, "reason": f"{type(err).__name__}: {err}"})
    return waves, pd.DataFrame(errors, columns=ERROR_COLUMNS)


def class_weights(y: np.ndarray, n_labels: int, *, counts: np.ndarray | None = None) -> np.ndarray:
    """Inverse-frequency class weights ``n / (n_labels * count_c)`` (mean weight per sample = 1).

    Args:
        y: class indices ``[n]``.
        n_labels: number of classes.
        counts: windows per class per epoch when they are not those of ``y`` (e.g. the
            expected counts of corpus-balanced sampling); default ``bincount(y)``.

    Raises:
        ValueError: a class has no samples.
    """
    if counts is None:
        counts = np.bincount(np.asarray(y, dtype=int), minlength=n_labels)
    counts = np.asarray(counts, dtype=float)
    if (counts == 0).any():
        raise ValueError(f"class indices {np.flatnonzero(counts == 0).tolist()} have no training samples")
    return (counts.sum() / (n_labels * counts)).astype(np.float32)


def add_noise_np(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` dB SNR (a silent window stays silent)."""
    power = float(np.mean(np.square(x, dtype=np.float64)))
    scale = math.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (x + scale * rng.standard_normal(len(x))).astype(np.float32)


class WindowDataset(Dataset):
    """One fixed-length window per utterance, augmented on the fly.

    Indices are ``(epoch, i)`` pairs (see :class:`EpochSampler`) or plain ``i`` (epoch 0).
    Training windows: random position (:func:`ser.models.window.fit_window`) and, with
    ``augment``, white noise on a ``noise_prob`` share at an SNR drawn from ``snr_db``;
    every draw comes from ``numpy.random.default_rng([seed, epoch, i])``, so a window
    depends only on ``(seed, epoch, i)``, not on the worker that makes it.
    Evaluation windows (``train=False``): the centre window, no augmentation.

    Args:
        waves: float32 waveforms ``[T_i]``.
        y: class indices ``[n]``.
        n_samples: window length in samples.
        train: random windows and augmentation.
        seed: run seed.
        augment: :data:`DEFAULT_AUGMENT`-style options (``None``: no noise).
    """

    def __init__(self, waves: Sequence[np.ndarray], y: np.ndarray, n_samples: int, *, train: bool,
                 seed: int, augment: Mapping[str, Any] | None = None) -> None:
        self.waves, self.y, self.n = list(waves), np.asarray(y, dtype=np.int64), int(n_samples)
        self.train, self.seed, self.augment = bool(train), int(seed), dict(augment or {})

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[np.ndarray, int]:
        epoch, i = index if isinstance(index, tuple) else (0, index)
        if not self.train:
            return fit_window(self.waves[i], self.n), int(self.y[i])
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        x = fit_window(self.waves[i], self.n, rng=rng)
        if self.augment.get("noise_prob", 0.0) > 0 and rng.random() < self.augment["noise_prob"]:
            lo, hi = self.augment["snr_db"]
            x = add_noise_np(x, rng.uniform(lo, hi), rng)
        return x, int(self.y[i])


class EpochSampler(Sampler):
    """Wrap a :class:`~torch.utils.data.DistributedSampler` (or a
    :class:`~ser.train.sampling.CorpusBalancedSampler`) to yield ``(epoch, index)`` pairs.

    DataLoader workers hold copies of the dataset, so the epoch travels with each index
    instead of being set on the dataset.
    """

    def __init__(self, sampler: DistributedSampler | CorpusBalancedSampler) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(int(epoch))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


# --------------------------------------------------------------------------- checks


def _check_inputs(utterances: pd.DataFrame, labels: Sequence[str], **opts: Any) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in utterances.columns]
    if missing:
        raise ValueError(f"utterances table lacks columns {missing}; it must come from stage "
                         "01_preprocess (results/tables/utterances.csv)")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must name at least 2 distinct classes; got {list(labels)}")
    for name in ("epochs", "batch_size", "patience"):
        if int(opts[name]) < 1:
            raise ValueError(f"{name} must be >= 1; got {opts[name]}")
    if not opts["lr"] > 0:
        raise ValueError(f"lr must be > 0; got {opts['lr']}")
    if not opts["mixup_alpha"] >= 0:
        raise ValueError(f"mixup_alpha must be >= 0 (0: no mixup); got {opts['mixup_alpha']}")
    if not opts["min_duration_s"] >= 0:
        raise ValueError(f"min_duration_s must be >= 0 seconds; got {opts['min_duration_s']}")


def _partition(utterances: pd.DataFrame, labels: Sequence[str], split: str) -> pd.DataFrame:
    part = utterances[(utterances["split"] == split) & utterances["label"].isin(labels)]
    if part.empty:
        raise ValueError(f"utterances table has no rows with split == {split!r} and a label in "
                         f"{list(labels)}; check the split in stage 01_preprocess")
    return part


def utterances_seen(train: pd.DataFrame, labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Training utterances per corpus and label, ``{corpus: {label: n}}`` (every label, 0
    when absent), so a bundle says what it learnt from (a table without a ``corpus``
    column counts as one corpus, ``""``)."""
    corpus = (train["corpus"].fillna("").astype(str) if "corpus" in train.columns
              else pd.Series("", index=train.index))
    table = pd.crosstab(corpus, train["label"]).reindex(columns=list(labels), fill_value=0)
    return {str(c): {str(lab): int(n) for lab, n in row.items()} for c, row in table.iterrows()}


def _label_errors(utterances: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Rows of train/val whose label is not in ``labels``: named, then ignored."""
    rows = utterances[utterances["split"].isin(["train", "val"]) & ~utterances["label"].isin(labels)]
    reasons = [f"label {lab!r} is not in labels {list(labels)}; utterance ignored "
               "(add the label or map it in stage 01_preprocess)" if isinstance(lab, str) and lab
               else "no label; utterance ignored" for lab in rows["label"]]
    return pd.DataFrame({"path": rows["path"].astype(str).tolist(), "reason": reasons}, columns=ERROR_COLUMNS)


def _log_set_aside(errors: pd.DataFrame, table: Path, *, show: int = 10) -> None:
    """Name each set-aside file in the log (the first ``show``; all are in ``table``)."""
    for row in errors.head(show).itertuples(index=False):
        log.warning("training goes on without %s: %s", row.path, row.reason)
    if len(errors) > show:
        log.warning("... and %d more set-aside utterances, listed in %s", len(errors) - show, table)


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    local_rank: int
    initialised_here: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextmanager
def _distributed(device: str) -> Iterator[tuple[_Dist, torch.device]]:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield _Dist(0, 1, 0, False), resolve_device(device)
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    try:
        yield _Dist(rank, world, local_rank, created), dev
    finally:
        if created:
            dist.destroy_process_group()


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _broadcast_flag(flag: bool, d: _Dist, dev: torch.device) -> bool:
    if d.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=dev)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _derived_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams per epoch, rank and purpose)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- checkpoints


def _fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _rng_state(dev: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def _set_rng_state(state: Mapping[str, Any], dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if dev.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], dev)


def _save_checkpoint(path: Path, obj: Mapping[str, Any]) -> None:
    atomic.atomic_write(path, lambda f: torch.save(dict(obj), f))


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err}); delete it or "
                         "set resume=False") from err
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("fingerprint") != fingerprint:
        raise ValueError(f"{path} was written by a run with other settings or data "
                         "(labels, arch, features, window, optimiser, seed, augmentation or "
                         "utterances differ); delete it or set resume=False to start over")
    return ckpt


# --------------------------------------------------------------------------- training


def train(
    utterances: pd.DataFrame,
    *,
    out_dir: str | os.PathLike[str],
    labels: Sequence[str],
    arch: str = "small_cnn",
    arch_params: Mapping[str, Any] | None = None,
    features: Mapping[str, Any] | None = None,
    window_s: float = 2.0,
    sample_rate: int = 16000,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    patience: int = 5,
    seed: int = 0,
    device: str = "auto",
    augment: bool | Mapping[str, Any] = True,
    mixup_alpha: float = 0.0,
    class_weighting: bool = True,
    min_duration_s: float = 0.25,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    num_workers: int | None = None,
    pitch_norm_hz: float = 0.0,
    balance_corpora: bool = True,
    progress: bool = True,
) -> Path:
    """Train a model on the ``train`` split, select it on ``val``, write the bundle.

    Args:
        utterances: table with at least ``path, label, speaker, split`` (see
            ``docs/architecture.md``); train/val rows whose label is not in ``labels``
            are listed in ``train_errors.csv`` and ignored.
        out_dir: bundle folder, e.g. ``paths.models_dir() / "demo_cnn"``.
        labels: class names; output column order of the model.
        arch: registered architecture (:data:`ser.models.registry.ARCHITECTURES`).
        arch_params: architecture options (e.g. ``{"channels": [16, 32, 64, 128]}``); the
            bundle stores the model's resolved options (all defaults written out).
        features: log-mel overrides (:func:`ser.models.window.features_config`).
        window_s: model window in seconds.
        sample_rate: audio is resampled to this rate (Hz).
        epochs: maximum number of epochs.
        batch_size: windows per optimisation step (per process under ``torchrun``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: epochs without a better validation UAR before stopping.
        seed: seed for weights, crops, shuffling and augmentation.
        device: ``"auto"`` (cuda when available), ``"cpu"`` or ``"cuda"``.
        augment: white noise, frequency warp and SpecAugment (:data:`DEFAULT_AUGMENT`), or a
            mapping that overrides some of its keys; random crops always.
        mixup_alpha: mixup (Zhang et al., 2018) of training waveforms and targets with
            a Beta(alpha, alpha) weight per batch; 0 turns it off.
        class_weighting: weight the loss by inverse class frequency.
        min_duration_s: utterances shorter than this (seconds) are set aside, listed in
            ``train_errors.csv``.
        resume: continue from ``out_dir / "checkpoint.pt"`` when it exists.
        cache_dir: waveform cache folder (``None``: ``paths.results_dir() / "cache"``).
        cache: use the waveform cache.
        num_workers: DataLoader worker processes (``None`` or negative: 4 on CUDA, 0 on CPU).
        pitch_norm_hz: speaker pitch normalisation (:mod:`ser.signal.pitchnorm`): each speaker's
            utterances are shifted (PSOLA, formants kept) so the speaker's register is this
            many Hz; the bundle stores it and evaluation and inference shift each speaker or
            recording the same way. 0 (default): off.
        balance_corpora: when the training utterances come from more than one corpus
            (column ``corpus``), every corpus fills the same share of each epoch
            (:class:`ser.train.sampling.CorpusBalancedSampler`) and the class weights follow
            that composition; with one corpus it has no effect.
        progress: show tqdm bars.

    Returns:
        ``out_dir`` holding ``model.json``, ``model.pt``, ``history.csv``, ``train_errors.csv``.

    Raises:
        ValueError: missing columns, no train/val rows, a label without training data,
            bad options, or a checkpoint from a different run when resuming.
    """
    _check_inputs(utterances, labels, epochs=epochs, batch_size=batch_size, patience=patience, lr=lr,
                  mixup_alpha=mixup_alpha, min_duration_s=min_duration_s)
    aug = _augment_options(augment)
    pitch_norm_hz = pitchnorm.check_target(pitch_norm_hz)
    feats = features_config(**dict(features or {}))
    folder = None if not cache else Path(cache_dir) if cache_dir is not None else _paths.results_dir() / "cache"
    with _distributed(device) as (d, dev):
        auto = num_workers is None or int(num_workers) < 0
        workers = (4 if dev.type == "cuda" else 0) if auto else int(num_workers)  # type: ignore[arg-type]
        return _train(utterances, d=d, dev=dev, out=Path(out_dir), labels=list(labels), arch=arch,
                      arch_params=dict(arch_params or {}), feats=feats, window_s=window_s,
                      sample_rate=sample_rate, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                      weight_decay=float(weight_decay), patience=int(patience), seed=int(seed), augment=aug,
                      mixup_alpha=float(mixup_alpha), class_weighting=bool(class_weighting),
                      min_duration_s=float(min_duration_s), resume=bool(resume), cache_dir=folder,
                      num_workers=workers, pitch_norm_hz=pitch_norm_hz,
                      balance_corpora=bool(balance_corpora), progress=progress)


def _train(utterances: pd.DataFrame, *, d: _Dist, dev: torch.device, out: Path, labels: list[str],
           arch: str, arch_params: dict[str, Any], feats: dict[str, Any], window_s: float,
           sample_rate: int, epochs: int, batch_size: int, lr: float, weight_decay: float,
           patience: int, seed: int, augment: dict[str, Any] | None, mixup_alpha: float,
           class_weighting: bool, min_duration_s: float, resume: bool, cache_dir: Path | None,
           num_workers: int, pitch_norm_hz: float, balance_corpora: bool, progress: bool) -> Path:
    t_start = time.perf_counter()
    progress = progress and d.main
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    n_win = window_samples(window_s, sample_rate)

    # ---- data: read once (rank 0 fills the cache first), set aside what cannot be used
    train_df, val_df = _partition(utterances, labels, "train"), _partition(utterances, labels, "val")
    wanted = pd.concat([train_df["path"], val_df["path"]])
    if d.world > 1 and not d.main:
        _barrier(d)
    waves, errors = load_waveforms(wanted, sample_rate=sample_rate, progress=progress, cache_dir=cache_dir)
    if d.world > 1 and d.main:
        _barrier(d)
    min_samples = int(round(min_duration_s * sample_rate))
    short = [p for p, w in waves.items() if len(w) < min_samples]
    label_errors = _label_errors(utterances, labels)
    counts = {"n_failed": len(errors), "n_too_short": len(short), "n_unknown_label": len(label_errors)}
    errors = pd.concat([errors, pd.DataFrame(
        {"path": short, "reason": [f"too short: {len(waves[p]) / sample_rate:.3f} s < min_duration_s="
                                   f"{min_duration_s:g} s; utterance ignored" for p in short]}),
        label_errors], ignore_index=True)[ERROR_COLUMNS]
    for p in short:
        del waves[p]
    if d.main:
        atomic.atomic_write_csv(out / "train_errors.csv", errors)
        _log_set_aside(errors, out / "train_errors.csv")
    train_df, val_df = (df[df["path"].astype(str).isin(waves)] for df in (train_df, val_df))
    pitch_shifts: dict[str, float] = {}
    if pitch_norm_hz > 0:
        used = pd.concat([train_df, val_df])
        waves, pitch_shifts = pitchnorm.normalise_by_group(
            {p: waves[p] for p in used["path"].astype(str)},
            dict(zip(used["path"].astype(str), used["speaker"].astype(str))), sample_rate,
            target_hz=pitch_norm_hz, progress=progress)
    if train_df.empty or val_df.empty:
        raise ValueError(f"no usable {'training' if train_df.empty else 'validation'} audio; "
                         f"see {out / 'train_errors.csv'}")
    absent = sorted(set(labels) - set(train_df["label"]))
    if absent:
        raise ValueError(f"labels {absent} have no readable training utterances; "
                         "remove them from labels or add data")
    index = {lab: i for i, lab in enumerate(labels)}
    y_train = train_df["label"].map(index).to_numpy(int)
    y_val = val_df["label"].map(index).to_numpy(int)
    train_corpora = (train_df["corpus"].fillna("").astype(str).to_numpy() if "corpus" in train_df.columns
                     else np.full(len(train_df), "", dtype=object))
    balanced = balance_corpora and len(set(train_corpora)) > 1
    epoch_counts = balanced_class_counts(y_train, train_corpora, len(labels)) if balanced else None
    weights = (class_weights(y_train, len(labels), counts=epoch_counts) if class_weighting
               else np.ones(len(labels), np.float32))
    aug = augment or {"random_crop": True}

    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    # ---- model, optimiser, resume
    settings = {"labels": labels, "arch": arch, "arch_params": arch_params, "features": feats,
                "window_s": window_s, "sample_rate": sample_rate, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "seed": seed, "augment": aug, "mixup_alpha": mixup_alpha,
                "class_weighting": class_weighting, "min_duration_s": min_duration_s, "world": d.world,
                "pitch_norm_hz": pitch_norm_hz, **({"balance_corpora": True} if balanced else {}),
                "train": sorted(zip(train_df["path"].astype(str), train_df["label"])),
                "val": sorted(zip(val_df["path"].astype(str), val_df["label"]))}
    fingerprint = _fingerprint(settings)
    ckpt_path = out / CHECKPOINT_NAME
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = build_model(arch, n_labels=len(labels), sample_rate=sample_rate, features=feats,
                            **arch_params).to(dev)
        train_waves = [waves[str(p)] for p in train_df["path"]]
        val_waves = [waves[str(p)] for p in val_df["path"]]
        if embedding_cache.uses_cache(model):  # frozen backbone: its statistics once, then the head alone
            train_ds, val_ds = embedding_cache.cached_datasets(
                model, train_waves=train_waves, y_train=y_train, val_waves=val_waves, y_val=y_val,
                n_samples=n_win, seed=seed, device=dev, progress=progress)
        else:
            train_ds = WindowDataset(train_waves, y_train, n_win, train=True, seed=seed, augment=augment)
            val_ds = WindowDataset(val_waves, y_val, n_win, train=False, seed=seed)
        sampler = EpochSampler(
            CorpusBalancedSampler(train_corpora, seed=seed, num_replicas=d.world, rank=d.rank) if balanced
            else DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed,
                                    drop_last=False))
        loader_kw: dict[str, Any] = dict(num_workers=num_workers, pin_memory=dev.type == "cuda",
                                         persistent_workers=num_workers > 0)
        train_dl = DataLoader(train_ds, batch_size=batch_size, sampler=sampler,
                              drop_last=len(sampler) > batch_size, **loader_kw)
        val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, **loader_kw)
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights).to(dev))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5,
                                                           patience=max(1, patience // 2))
        state: dict[str, Any] = {"epoch": 0, "best": {"uar": -math.inf, "val_loss": math.inf, "epoch": 0},
                                 "improved_at": 0, "history": [], "stopped": False}
        best_state = copy.deepcopy(model.state_dict())
        if resume and ckpt_path.is_file():
            ckpt = _load_checkpoint(ckpt_path, fingerprint)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            best_state = ckpt["best_state"]
            state = ckpt["state"]
            _set_rng_state(ckpt["rng"], dev)
            log.warning("resuming %s after epoch %d", out, state["epoch"])
        elif resume:
            log.warning("resume=True but %s has no %s; training from epoch 1", out, CHECKPOINT_NAME)
        net: nn.Module = model
        if d.world > 1:
            net = nn.parallel.DistributedDataParallel(  # LayerDrop skips layers in hf backbones
                model, device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=arch == "hf")

        bar = tqdm(range(state["epoch"] + 1, epochs + 1), desc="train", unit="epoch", disable=not progress)
        for epoch in bar:
            if state["stopped"]:
                break
            t0 = time.perf_counter()
            torch.manual_seed(_derived_seed(seed, epoch, d.rank, 0))  # dropout, stochastic layers
            aug_gen = torch.Generator().manual_seed(_derived_seed(seed, epoch, d.rank, 1))
            mix_rng = np.random.default_rng([seed, epoch, d.rank, 2])
            spec_tf = _spec_transform(aug, aug_gen) if augment else None
            sampler.set_epoch(epoch)
            net.train()
            total, count = torch.zeros((), device=dev), 0
            for x, y in train_dl:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                lam, perm = 1.0, None
                if mixup_alpha > 0 and len(y) > 1:
                    lam = float(mix_rng.beta(mixup_alpha, mixup_alpha))
                    perm = torch.from_numpy(mix_rng.permutation(len(y))).to(dev)
                    x = lam * x + (1.0 - lam) * x[perm]
                with torch.autocast(**amp):
                    logits = net(x, spec_transform=spec_tf)
                loss = loss_fn(logits.float(), y)
                if perm is not None:
                    loss = lam * loss + (1.0 - lam) * loss_fn(logits.float(), y[perm])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + loss.detach() * len(y), count + len(y)
            val_loss, val_uar = _validate(model, val_dl, loss_fn, dev, amp, n_labels=len(labels))
            sched.step(val_uar)
            best = state["best"]
            row = {"epoch": epoch, "train_loss": float(total) / max(count, 1), "val_loss": float(val_loss),
                   "val_uar": float(val_uar), "lr": float(opt.param_groups[0]["lr"]),
                   "seconds": time.perf_counter() - t0}
            state["history"].append(row)
            if val_uar > best["uar"]:
                state["improved_at"] = epoch
            if val_uar > best["uar"] or (val_uar == best["uar"] and val_loss < best["val_loss"]):
                state["best"] = {"uar": row["val_uar"], "val_loss": row["val_loss"], "epoch": epoch}
                best_state = copy.deepcopy(model.state_dict())
            state["epoch"] = epoch
            state["stopped"] = _broadcast_flag(epoch - state["improved_at"] >= patience, d, dev)
            if d.main:
                atomic.atomic_write_csv(out / "history.csv",
                                            pd.DataFrame(state["history"], columns=HISTORY_COLUMNS))
                _save_checkpoint(ckpt_path, {
                    "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "best_state": best_state, "state": state, "rng": _rng_state(dev)})
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_uar=f"{val_uar:.3f}",
                            best=f"{state['best']['uar']:.3f}@{state['best']['epoch']}")
    model.load_state_dict(best_state)

    if d.main:
        history, best = state["history"], state["best"]
        split = {str(part): sorted(map(str, grp["speaker"].unique()))
                 for part, grp in utterances.dropna(subset=["split"]).groupby("split")}
        train_params = {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "patience": patience, "seed": seed, "augment": aug, "mixup_alpha": mixup_alpha,
            "class_weighting": class_weighting, "min_duration_s": min_duration_s, "device": dev.type,
            "bf16_autocast": dev.type == "cuda", "num_workers": num_workers, "world_size": d.world,
            "best_epoch": best["epoch"], "epochs_run": len(history), "resumed": bool(resume),
            "n_train": len(train_df), "n_val": len(val_df), **counts,
            "utterances_per_corpus": utterances_seen(train_df, labels),
            "balance_corpora": bool(balanced),
            "n_ignored_labels": int((~utterances["label"].isin(labels)).sum()),
            "class_weights": dict(zip(labels, weights.tolist())),
            "pitch_shift_st": {k: round(v, 3) for k, v in pitch_shifts.items()},
            "seconds": round(time.perf_counter() - t_start, 2),
        }
        metrics = {"val": {"uar": best["uar"], "loss": best["val_loss"], "epoch": best["epoch"],
                           "n_utterances": len(val_df)}}
        save_bundle(out, model, labels=labels, sample_rate=sample_rate, window_s=window_s,
                    features=feats, arch=arch, arch_params=resolved_arch_params(model, arch_params),
                    train_params=train_params, split=split, metrics=metrics, pitch_norm_hz=pitch_norm_hz)
        ckpt_path.unlink(missing_ok=True)
    _barrier(d)
    return out


def _augment_options(augment: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """``True`` -> :data:`DEFAULT_AUGMENT`; a mapping -> the defaults it overrides; ``False`` -> None."""
    if isinstance(augment, Mapping):
        unknown = set(augment) - set(DEFAULT_AUGMENT)
        if unknown:
            raise ValueError(f"augment: unknown keys {sorted(unknown)}; allowed: {sorted(DEFAULT_AUGMENT)}")
        return {**DEFAULT_AUGMENT, **augment}
    return dict(DEFAULT_AUGMENT) if augment else None


def _spec_transform(aug: Mapping[str, Any], gen: torch.Generator) -> Any:
    """Batch spectrogram augmentation: frequency warp, then SpecAugment masks."""
    def transform(spec: torch.Tensor) -> torch.Tensor:
        if aug["freq_warp"] > 0:
            spec = freq_warp(spec, max_warp=aug["freq_warp"], generator=gen)
        return spec_augment(spec, freq_masks=aug["freq_masks"], max_freq=aug["max_freq"],
                            time_masks=aug["time_masks"], max_time=aug["max_time"], generator=gen)
    return transform


def _validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, dev: torch.device,
              amp: Mapping[str, Any], *, n_labels: int) -> tuple[float, float]:
    """Weighted cross-entropy and UAR over the validation windows."""
    model.eval()
    logits, ys = [], []
    with torch.inference_mode(), torch.autocast(**amp):
        for x, y in loader:
            logits.append(model(x.to(dev, non_blocking=True)).float().cpu())
            ys.append(y)
    all_logits, all_y = torch.cat(logits), torch.cat(ys)
    loss = loss_fn(all_logits.to(dev), all_y.to(dev)).item()
    return loss, uar(all_y.numpy(), all_logits.argmax(1).numpy(), labels=list(range(n_labels)))


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m ser.train.loop`` (or under ``torchrun``): train from a stage-02 params file."""
    import yaml

    ap = argparse.ArgumentParser(prog="python -m ser.train.loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", required=True, help="utterances.csv from stage 01_preprocess")
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--params", default=str(_paths.PARAMS / "02_train.yaml"),
                    help="stage-02 parameters (YAML); model_name and notebook-only keys are ignored")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    args = ap.parse_args(argv)
    params = yaml.safe_load(Path(args.params).read_text(encoding="utf-8")) or {}
    accepted = set(inspect.signature(train).parameters)
    kwargs = {k: v for k, v in params.items() if k in accepted and k not in ("out_dir", "utterances")}
    kwargs["resume"] = bool(args.resume or kwargs.get("resume", False))
    return train(pd.read_csv(args.utterances), out_dir=args.out, **kwargs)


if __name__ == "__main__":
    main()
