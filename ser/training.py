"""Training loop: utterances table -> model bundle (weights, ``model.json``, ``history.csv``).

Each utterance is read once (:func:`ser.audio.load`: mono, resampled) and kept in
memory; every epoch cuts one window per utterance with :func:`ser.models.fit_window`
(random position for training, centred for validation; utterances shorter than the
window are zero-padded on both sides). Files that cannot be read are listed in
``train_errors.csv`` (``path, reason``) and training goes on with the rest.

Loss: class-weighted cross-entropy (weights ``n / (k * n_c)`` from the training
counts). Optimiser: AdamW; the learning rate halves when the validation UAR stalls
(ReduceLROnPlateau); training stops after ``patience`` epochs without a strictly
better validation UAR, and the weights of the best epoch (highest UAR, ties broken
by lower validation loss) are saved. All randomness comes from
``seed`` (a forked torch RNG and explicit generators), so a run is repeatable on
the same machine. On CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ser import audio, provenance
from ser.evaluation import uar
from ser.models import build_model, features_config, fit_window, resolve_device, save_bundle, window_samples
from ser.spectrogram import add_noise, spec_augment

#: Augmentation used when ``augment=True`` (recorded in ``model.json``).
DEFAULT_AUGMENT: dict[str, Any] = {
    "random_crop": True,          # always on in training, see fit_window
    "noise_prob": 0.5,            # share of training windows that get white noise
    "snr_db": [10.0, 30.0],       # SNR drawn uniformly in this range (dB)
    "freq_masks": 2, "max_freq": 8,    # SpecAugment frequency masks (mel bins)
    "time_masks": 2, "max_time": 20,   # SpecAugment time masks (frames)
}
#: Columns the utterances table must have.
REQUIRED_COLUMNS = ("path", "label", "speaker", "split")
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_uar", "lr", "seconds"]


def load_waveforms(
    paths: Iterable[str | os.PathLike[str]], *, sample_rate: int, progress: bool = True,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Read each distinct file once as mono float32 at ``sample_rate``.

    Args:
        paths: audio files (duplicates are read once).
        sample_rate: target rate in Hz.
        progress: show a tqdm bar.

    Returns:
        ``(waves, errors)``: ``waves`` maps ``str(path)`` to a float32 ``[T]`` array;
        ``errors`` has columns ``path, reason`` for files that failed (never raised).
    """
    unique = list(dict.fromkeys(str(p) for p in paths))
    waves: dict[str, np.ndarray] = {}
    errors: list[dict[str, str]] = []
    for p in tqdm(unique, desc="load audio", unit="file", disable=not progress):
        try:
            waves[p] = audio.load(p, sample_rate=sample_rate)[0]
        except (audio.AudioError, OSError, ValueError, RuntimeError) as err:
            errors.append({"path": p, "reason": f"{type(err).__name__}: {err}"})
    return waves, pd.DataFrame(errors, columns=["path", "reason"])


def class_weights(y: np.ndarray, n_labels: int) -> np.ndarray:
    """Inverse-frequency class weights ``n / (n_labels * count_c)`` (mean weight per sample = 1).

    Raises:
        ValueError: a class has no samples.
    """
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_labels).astype(float)
    if (counts == 0).any():
        raise ValueError(f"class indices {np.flatnonzero(counts == 0).tolist()} have no training samples")
    return (counts.sum() / (n_labels * counts)).astype(np.float32)


class _WindowDataset(Dataset):
    """One window per utterance; random position per (seed, epoch, index) when ``train``."""

    def __init__(self, waves: Sequence[np.ndarray], y: np.ndarray, n_samples: int, *,
                 train: bool, seed: int) -> None:
        self.waves, self.y, self.n, self.train, self.seed = list(waves), y, n_samples, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        return fit_window(self.waves[i], self.n, rng=rng), int(self.y[i])


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


def _partition(utterances: pd.DataFrame, labels: Sequence[str], split: str) -> pd.DataFrame:
    part = utterances[(utterances["split"] == split) & utterances["label"].isin(labels)]
    if part.empty:
        raise ValueError(f"utterances table has no rows with split == {split!r} and a label in "
                         f"{list(labels)}; check the split in stage 01_preprocess")
    return part


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
    augment: bool = True,
    num_workers: int = 0,
    progress: bool = True,
) -> Path:
    """Train a model on the ``train`` split, select it on ``val``, write the bundle.

    Args:
        utterances: table with at least ``path, label, speaker, split`` (see
            ``docs/architecture.md``); rows whose label is not in ``labels`` are ignored.
        out_dir: bundle folder, e.g. ``paths.models_dir() / "demo_cnn"``.
        labels: class names; output column order of the model.
        arch: registered architecture (:data:`ser.models.ARCHITECTURES`).
        arch_params: architecture options (e.g. ``{"channels": [16, 32, 64, 128]}``).
        features: log-mel overrides (:func:`ser.models.features_config`).
        window_s: model window in seconds.
        sample_rate: audio is resampled to this rate (Hz).
        epochs: maximum number of epochs.
        batch_size: windows per optimisation step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: epochs without a better validation UAR before stopping.
        seed: seed for weights, crops, shuffling and augmentation.
        device: ``"auto"`` (cuda when available), ``"cpu"`` or ``"cuda"``.
        augment: random noise and SpecAugment (:data:`DEFAULT_AUGMENT`); random crops always.
        num_workers: DataLoader worker processes.
        progress: show tqdm bars.

    Returns:
        ``out_dir`` holding ``model.json``, ``model.pt``, ``history.csv``, ``train_errors.csv``.

    Raises:
        ValueError: missing columns, no train/val rows, a label without training data,
            or bad options.
    """
    _check_inputs(utterances, labels, epochs=epochs, batch_size=batch_size, patience=patience, lr=lr)
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(labels)
    arch_params = dict(arch_params or {})
    feats = features_config(**dict(features or {}))
    n_win = window_samples(window_s, sample_rate)
    dev = resolve_device(device)

    train_df, val_df = _partition(utterances, labels, "train"), _partition(utterances, labels, "val")
    waves, errors = load_waveforms(pd.concat([train_df["path"], val_df["path"]]),
                                   sample_rate=sample_rate, progress=progress)
    provenance.atomic_write_csv(out / "train_errors.csv", errors)
    train_df, val_df = (df[df["path"].astype(str).isin(waves)] for df in (train_df, val_df))
    if train_df.empty or val_df.empty:
        raise ValueError(f"no readable {'training' if train_df.empty else 'validation'} audio; "
                         f"see {out / 'train_errors.csv'}")
    absent = sorted(set(labels) - set(train_df["label"]))
    if absent:
        raise ValueError(f"labels {absent} have no readable training utterances; "
                         "remove them from labels or add data")
    index = {lab: i for i, lab in enumerate(labels)}
    y_train = train_df["label"].map(index).to_numpy(int)
    y_val = val_df["label"].map(index).to_numpy(int)
    weights = class_weights(y_train, len(labels))

    train_ds = _WindowDataset([waves[str(p)] for p in train_df["path"]], y_train, n_win,
                              train=True, seed=seed)
    val_ds = _WindowDataset([waves[str(p)] for p in val_df["path"]], y_val, n_win,
                            train=False, seed=seed)
    shuffle_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=shuffle_gen,
                          drop_last=len(train_ds) > batch_size, num_workers=num_workers,
                          pin_memory=dev.type == "cuda", persistent_workers=num_workers > 0)
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, num_workers=num_workers)
    aug = dict(DEFAULT_AUGMENT) if augment else {"random_crop": True}
    spec_tf = (functools.partial(spec_augment, freq_masks=aug["freq_masks"], max_freq=aug["max_freq"],
                                 time_masks=aug["time_masks"], max_time=aug["max_time"], generator=aug_gen)
               if augment else None)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = build_model(arch, n_labels=len(labels), sample_rate=sample_rate, features=feats,
                            **arch_params).to(dev)
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights).to(dev))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5,
                                                           patience=max(1, patience // 2))
        best = {"uar": -math.inf, "val_loss": math.inf, "epoch": 0}
        best_state = copy.deepcopy(model.state_dict())
        improved_at = 0  # last epoch with a strictly better val UAR (early stopping)
        bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress)
        for epoch in bar:
            t0 = time.perf_counter()
            train_ds.epoch = epoch
            model.train()
            total, count = 0.0, 0
            for x, y in train_dl:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                if augment:
                    x = _noise(x, aug, aug_gen)
                with torch.autocast(**amp):
                    logits = model(x, spec_transform=spec_tf)
                loss = loss_fn(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + loss.item() * len(y), count + len(y)
            val_loss, val_uar = _validate(model, val_dl, loss_fn, dev, amp, n_labels=len(labels))
            sched.step(val_uar)
            row = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss,
                   "val_uar": val_uar, "lr": opt.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            provenance.atomic_write_csv(out / "history.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS))
            if val_uar > best["uar"]:
                improved_at = epoch
            if val_uar > best["uar"] or (val_uar == best["uar"] and val_loss < best["val_loss"]):
                best = {"uar": val_uar, "val_loss": val_loss, "epoch": epoch}
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_uar=f"{val_uar:.3f}",
                            best=f"{best['uar']:.3f}@{best['epoch']}")
            if epoch - improved_at >= patience:
                break
    model.load_state_dict(best_state)

    split = {str(part): sorted(map(str, grp["speaker"].unique()))
             for part, grp in utterances.dropna(subset=["split"]).groupby("split")}
    train_params = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "patience": patience, "seed": seed, "augment": aug, "device": dev.type,
        "bf16_autocast": dev.type == "cuda", "num_workers": num_workers,
        "best_epoch": best["epoch"], "epochs_run": len(history),
        "n_train": len(train_df), "n_val": len(val_df), "n_failed": len(errors),
        "n_ignored_labels": int((~utterances["label"].isin(labels)).sum()),
        "class_weights": dict(zip(labels, weights.tolist())),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    metrics = {"val": {"uar": best["uar"], "loss": best["val_loss"], "epoch": best["epoch"],
                       "n_utterances": len(val_df)}}
    save_bundle(out, model, labels=labels, sample_rate=sample_rate, window_s=window_s,
                features=feats, arch=arch, arch_params=arch_params, train_params=train_params,
                split=split, metrics=metrics)
    return out


def _noise(x: torch.Tensor, aug: Mapping[str, Any], gen: torch.Generator) -> torch.Tensor:
    """White noise on a random share of the batch at a random SNR (see DEFAULT_AUGMENT)."""
    lo, hi = aug["snr_db"]
    snr = lo + (hi - lo) * torch.rand(len(x), generator=gen)
    keep = torch.rand(len(x), generator=gen) >= aug["noise_prob"]
    snr = torch.where(keep, torch.full_like(snr, math.inf), snr)
    return add_noise(x, snr_db=snr, generator=gen)


def _validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, dev: torch.device,
              amp: Mapping[str, Any], *, n_labels: int) -> tuple[float, float]:
    """Weighted cross-entropy and UAR over the validation windows."""
    model.eval()
    logits, ys = [], []
    with torch.inference_mode(), torch.autocast(**amp):
        for x, y in loader:
            logits.append(model(x.to(dev)).float().cpu())
            ys.append(y)
    all_logits, all_y = torch.cat(logits), torch.cat(ys)
    loss = loss_fn(all_logits.to(dev), all_y.to(dev)).item()
    return loss, uar(all_y.numpy(), all_logits.argmax(1).numpy(), labels=list(range(n_labels)))
