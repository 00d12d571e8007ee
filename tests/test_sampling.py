"""Corpus-balanced sampling: every corpus fills the same share of an epoch, whatever its size."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from ser.train.sampling import CorpusBalancedSampler, balanced_class_counts, corpus_quotas

CORPORA = ["big"] * 100 + ["small"] * 10  # 10:1


def test_a_ten_to_one_corpus_ratio_gives_a_balanced_epoch():
    s = CorpusBalancedSampler(CORPORA, seed=3)
    corp = np.asarray(CORPORA)
    seen_small = np.zeros(110, dtype=int)
    for epoch in range(4):
        s.set_epoch(epoch)
        idx = np.asarray(list(s))
        assert len(idx) == len(s) == 110  # the epoch keeps its length
        assert (corp[idx] == "big").sum() == 55 and (corp[idx] == "small").sum() == 55
        # the big corpus is subsampled without repeats, the small one cycled evenly
        assert len(set(idx[corp[idx] == "big"].tolist())) == 55
        counts = np.bincount(idx[corp[idx] == "small"], minlength=110)[100:]
        assert counts.min() == 5 and counts.max() == 6
        seen_small += np.bincount(idx, minlength=110)
    # without balancing the small corpus would be 10 of 110 windows per epoch
    assert seen_small[100:].sum() == 4 * 55


def test_order_depends_on_seed_and_epoch_only():
    a, b = CorpusBalancedSampler(CORPORA, seed=1), CorpusBalancedSampler(CORPORA, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(CorpusBalancedSampler(CORPORA, seed=2)) != list(CorpusBalancedSampler(CORPORA, seed=1))


def test_ranks_share_the_epoch_like_distributed_sampler():
    ranks = [CorpusBalancedSampler(CORPORA, seed=0, num_replicas=3, rank=r) for r in range(3)]
    parts = [list(r) for r in ranks]
    assert [len(p) for p in parts] == [37, 37, 37] == [len(r) for r in ranks]
    full = ranks[0].epoch_indices()
    padded = np.resize(full, 111)
    for r, p in enumerate(parts):
        assert p == padded[r::3].tolist()
    with pytest.raises(ValueError, match="rank"):
        CorpusBalancedSampler(CORPORA, num_replicas=2, rank=2)


def test_quotas_and_expected_class_counts():
    assert corpus_quotas(["b", "a", "a", "c", "c"]) == {"a": 2, "b": 2, "c": 1}
    with pytest.raises(ValueError, match="at least one"):
        corpus_quotas([])
    # big: 90 class 0 + 10 class 1; small: 10 class 1 -> epoch of 110: 55 from each corpus
    y = np.array([0] * 90 + [1] * 10 + [1] * 10)
    counts = balanced_class_counts(y, CORPORA, 2)
    np.testing.assert_allclose(counts, [55 * 0.9, 55 * 0.1 + 55])


def test_epoch_sampler_length_matches_the_distributed_one():
    s = CorpusBalancedSampler(["x"] * 7 + ["y"] * 3, num_replicas=2, rank=1)
    assert len(s) == len(DistributedSampler(list(range(10)), num_replicas=2, rank=1, shuffle=True))
