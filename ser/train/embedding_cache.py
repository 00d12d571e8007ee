"""Training a frozen-embedding model on statistics computed once (:mod:`ser.models.ssl_frozen`).

A frozen backbone gives the same layer statistics for the same window in every epoch,
so running it every epoch only repeats work: on the CPU the backbone is nearly all of
the cost. :func:`cached_datasets` runs it once per utterance, on fixed windows, and
returns datasets of layer statistics that the training loop feeds to the model in place
of waveforms (the model's ``forward`` takes either), so each epoch trains the head alone.

Windows (``cache_windows`` = k of the model): k = 1, the centre window
(:func:`ser.models.window.fit_window`, as validation uses); k > 1, k windows at evenly
spaced starts from the first to the last sample, one drawn per epoch and utterance from
``numpy.random.default_rng([seed, epoch, i])`` (a fixed set of crops in place of random
ones). Utterances shorter than the window give the centred, zero-padded window k times.
Validation utterances: the centre window. Waveform augmentation (noise) does not apply to
cached statistics; mixup, when on, mixes the statistics. The cache lives in memory for
the run: ``k x (layers + 1) x 2 x hidden`` float32 per utterance (200 kB for a 24-layer,
1024-wide model and k = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ser.models.ssl_frozen import FrozenSSLClassifier
from ser.models.window import fit_window


def uses_cache(model: torch.nn.Module) -> bool:
    """Whether ``model`` is trained on cached layer statistics (a frozen-embedding model
    with ``cache_windows`` > 0)."""
    return isinstance(model, FrozenSSLClassifier) and model.cache_windows > 0


def fixed_windows(wave: np.ndarray, n_samples: int, k: int) -> np.ndarray:
    """The ``k`` fixed windows of one utterance, float32 ``[k, n_samples]`` (see the module doc).

    Raises:
        ValueError: ``k`` < 1.
    """
    if int(k) < 1:
        raise ValueError(f"fixed_windows: need k >= 1 windows; got {k}")
    wave = np.asarray(wave, dtype=np.float32)
    if k == 1 or len(wave) <= n_samples:
        return np.repeat(fit_window(wave, n_samples)[None], k, axis=0)
    starts = np.round(np.linspace(0, len(wave) - n_samples, int(k))).astype(int)
    return np.stack([wave[s:s + n_samples] for s in starts])


def layer_stats_of(model: FrozenSSLClassifier, waves: Sequence[np.ndarray], *, n_samples: int, k: int,
                   device: torch.device, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Layer statistics of each utterance's ``k`` fixed windows, float32 ``[n, k, layers + 1, 2 x hidden]``
    on the CPU."""
    windows = np.concatenate([fixed_windows(w, n_samples, k) for w in waves]) if len(waves) else \
        np.zeros((0, n_samples), np.float32)
    out = torch.empty((len(windows), model.n_states, model.stats_dim), dtype=torch.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in tqdm(range(0, len(windows), batch_size), desc="embed", unit="batch", disable=not progress):
            x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size])).to(device)
            out[i:i + batch_size] = model.layer_stats(x).cpu()
    model.train(was_training)
    return out.reshape(len(waves), k, model.n_states, model.stats_dim)


class CachedStatsDataset(Dataset):
    """Cached layer statistics, one item per utterance (indices ``(epoch, i)`` or ``i``).

    Args:
        stats: float32 ``[n, k, layers + 1, 2 x hidden]``.
        y: class indices ``[n]``.
        train: draw one of the ``k`` windows per epoch (else the first).
        seed: run seed.
    """

    def __init__(self, stats: torch.Tensor, y: np.ndarray, *, train: bool, seed: int) -> None:
        if len(stats) != len(y):
            raise ValueError(f"CachedStatsDataset: {len(stats)} utterances but {len(y)} labels")
        self.stats, self.y = stats, np.asarray(y, dtype=np.int64)
        self.train, self.seed = bool(train), int(seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = index if isinstance(index, tuple) else (0, index)
        k = self.stats.shape[1]
        j = int(np.random.default_rng([self.seed, int(epoch), int(i)]).integers(k)) if self.train and k > 1 else 0
        return self.stats[i, j], int(self.y[i])


def cached_datasets(model: FrozenSSLClassifier, *, train_waves: Sequence[np.ndarray], y_train: np.ndarray,
                    val_waves: Sequence[np.ndarray], y_val: np.ndarray, n_samples: int, seed: int,
                    device: torch.device, progress: bool = False) -> tuple[CachedStatsDataset, CachedStatsDataset]:
    """Training and validation datasets of cached layer statistics for ``model``.

    Args:
        model: the frozen-embedding model (its backbone runs here, once per window).
        train_waves: training waveforms float32 ``[T_i]`` at 16 kHz (after pitch normalisation).
        y_train: their class indices.
        val_waves: validation waveforms.
        y_val: their class indices.
        n_samples: window length in samples.
        seed: run seed (which cached window each epoch uses).
        device: where the backbone runs.
        progress: show tqdm bars.

    Returns:
        ``(train_ds, val_ds)``; items are ``(stats [layers + 1, 2 x hidden], label)``.
    """
    k = model.cache_windows
    train_stats = layer_stats_of(model, train_waves, n_samples=n_samples, k=k, device=device, progress=progress)
    val_stats = layer_stats_of(model, val_waves, n_samples=n_samples, k=1, device=device, progress=progress)
    return (CachedStatsDataset(train_stats, y_train, train=True, seed=seed),
            CachedStatsDataset(val_stats, y_val, train=False, seed=seed))
