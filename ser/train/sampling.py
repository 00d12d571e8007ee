"""Corpus-balanced sampling of training utterances (multi-corpus training, issue 15 item 2).

With several corpora in one training table, the largest would dominate every epoch (e.g.
TurEV-DB's 1735 utterances against EMOVO's 336) and the model would learn its actors,
sentences and microphone. :class:`CorpusBalancedSampler` gives each corpus the same
share of every epoch: the epoch keeps its length ``n`` (one window per training
utterance, as without balancing), and each of the ``k`` corpora fills ``n / k`` slots
(the remainder goes to the first corpora in name order) with its own utterances in a
fresh random order, cycling through them again when the corpus is smaller than its
quota (a small corpus is repeated, never a file twice before all were seen once) and
using a random subset when it is larger. The order is derived from ``(seed, epoch)``
only, so a resumed run sees the same epochs; under ``torchrun`` each of ``world``
processes takes every ``world``-th index of the same list (padded by wrapping, as
:class:`torch.utils.data.DistributedSampler` does).

:func:`balanced_class_counts` is the expected number of windows of each class per epoch
under this sampling; the class weights of the loss are computed from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


def corpus_quotas(corpora: Sequence[Any], *, n: int | None = None) -> dict[str, int]:
    """Slots per corpus in one balanced epoch of ``n`` windows (default: one per utterance).

    Args:
        corpora: ``[n_utterances]`` corpus name of each training utterance.
        n: epoch length, windows.

    Returns:
        ``{corpus: slots}`` in sorted corpus order; slots differ by at most one.

    Raises:
        ValueError: no utterances.
    """
    names = sorted({str(c) for c in corpora})
    if not names:
        raise ValueError("corpus-balanced sampling needs at least one training utterance")
    total = len(corpora) if n is None else int(n)
    base, extra = divmod(total, len(names))
    return {c: base + (1 if i < extra else 0) for i, c in enumerate(names)}


def balanced_class_counts(y: np.ndarray, corpora: Sequence[Any], n_labels: int) -> np.ndarray:
    """Expected windows per class in one balanced epoch ``float64 [n_labels]``.

    Each utterance of corpus ``c`` is drawn ``quota_c / n_c`` times on average.
    """
    corp = np.asarray([str(c) for c in corpora])
    quotas = corpus_quotas(corp)
    sizes = {c: int((corp == c).sum()) for c in quotas}
    w = np.array([quotas[c] / sizes[c] for c in corp], dtype=np.float64)
    return np.bincount(np.asarray(y, dtype=int), weights=w, minlength=n_labels).astype(np.float64)


class CorpusBalancedSampler(Sampler):
    """Indices of one epoch in which every corpus fills the same number of slots.

    Args:
        corpora: ``[n]`` corpus name of each item of the dataset.
        seed: run seed (the order depends on ``(seed, epoch)`` only).
        num_replicas: processes sharing the epoch (``torchrun``'s world size).
        rank: this process.

    Raises:
        ValueError: no items, or ``rank`` outside ``0..num_replicas-1``.
    """

    def __init__(self, corpora: Sequence[Any], *, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        self.corpora = np.asarray([str(c) for c in corpora])
        self.quotas = corpus_quotas(self.corpora)
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank must be in 0..{num_replicas - 1}; got {rank}")
        self.members = {c: np.flatnonzero(self.corpora == c) for c in self.quotas}
        self.seed, self.num_replicas, self.rank = int(seed), int(num_replicas), int(rank)
        self.epoch = 0
        self.num_samples = math.ceil(len(self.corpora) / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def epoch_indices(self) -> np.ndarray:
        """All processes' indices of the current epoch ``int64 [n]``, before the split by rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = []
        for c, quota in self.quotas.items():
            idx = self.members[c]
            reps = math.ceil(quota / len(idx))
            parts.append(np.concatenate([rng.permutation(idx) for _ in range(reps)])[:quota])
        order = np.concatenate(parts)
        return order[rng.permutation(len(order))]

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_indices()
        total = self.num_samples * self.num_replicas
        if total > len(order):
            order = np.resize(order, total)
        return iter(order[self.rank:total:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
