"""Tests of ser.train.cross_corpus_eval: leave-one-corpus-out evaluation of the classical family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ser.models.classical.estimator import ClassicalModel
from ser.train.cross_corpus_eval import TABLE_COLUMNS, evaluate_loco, write_cross_corpus_table

CLASSES = ("angry", "happy", "neutral", "sad")
GRID = {"C": [0.1, 1.0]}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _corpora(*, shift: float = 4.0, n_per: int = 6, seed: int = 0):
    """Three synthetic corpora of 3 speakers; corpus ``shifted``'s features are offset by ``shift``.

    Speaker ids repeat across corpora (``s1..s3``), as real corpora's ids can.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.5, size=(len(CLASSES), 6))
    rows, y, spk, corp = [], [], [], []
    for name in ("alpha", "beta", "shifted"):
        for s in ("s1", "s2", "s3"):
            voice = rng.normal(0.0, 0.3, size=6)
            for k, lab in enumerate(CLASSES):
                x = means[k] + voice + rng.normal(0.0, 0.5, size=(n_per, 6))
                if name == "shifted":
                    x = x + shift
                rows.append(x)
                y += [lab] * n_per
                spk += [s] * n_per
                corp += [name] * n_per
    X = pd.DataFrame(np.vstack(rows), columns=[f"f{i}" for i in range(6)],
                     index=pd.Index([f"u{i:04d}.wav" for i in range(len(y))], name="path"))
    return X, np.array(y), np.array(spk), np.array(corp)


def test_table_rows_columns_and_transfer_gap():
    X, y, spk, corp = _corpora()
    res = evaluate_loco({"egemaps": X}, y, spk, corp, estimator="logreg", param_grid=GRID,
                        inner_folds=3, languages={"alpha": "de"}, progress=False)
    t = res.table
    assert list(t.columns) == list(TABLE_COLUMNS)
    assert t["held_out_corpus"].tolist() == ["alpha", "beta", "shifted"]
    assert t["language"].tolist() == ["de", "", ""]
    assert set(t["family"]) == {"classical"} and set(t["estimator"]) == {"logreg"}
    assert set(t["feature_set"]) == {"egemaps"} and not t["speaker_norm"].any()
    n = len(y)
    assert (t["n_test"] == n // 3).all() and (t["n_train"] == n - n // 3).all()
    assert t["ece"].between(0.0, 1.0).all()
    by = t.set_index("held_out_corpus")
    # the unshifted corpora transfer; the shifted one does not, though it is easy within itself
    assert by.loc["alpha", "uar"] > 0.8 and by.loc["beta", "uar"] > 0.8
    assert by.loc["shifted", "uar"] < 0.6
    assert by.loc["shifted", "in_corpus_loso_uar"] > 0.8
    assert by.loc["shifted", "ece"] > by.loc["alpha", "ece"]
    # uar and in-corpus figure come from the predictions / evaluate_loso
    p = res.predictions[res.predictions["held_out_corpus"] == "shifted"]
    assert len(p) == n // 3 and set(p["speaker"]) == {"shifted:s1", "shifted:s2", "shifted:s3"}
    np.testing.assert_allclose(p[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-9)
    recall = [np.mean(p["y_pred"][p["y_true"] == c] == c) for c in CLASSES]
    assert by.loc["shifted", "uar"] == pytest.approx(np.mean(recall))
    assert by.loc["shifted", "in_corpus_loso_uar"] == pytest.approx(res.loso[("egemaps", "shifted")]["uar"])


def test_speaker_norm_removes_the_corpus_shift():
    X, y, spk, corp = _corpora()
    res = evaluate_loco({"egemaps": X}, y, spk, corp, estimator="logreg", speaker_norm=True,
                        param_grid=GRID, inner_folds=3, in_corpus_loso=False, progress=False)
    by = res.table.set_index("held_out_corpus")
    assert by["speaker_norm"].all()
    assert by.loc["shifted", "uar"] > 0.8
    assert by["in_corpus_loso_uar"].isna().all() and res.loso == {}


def test_held_out_speakers_never_train(monkeypatch):
    X, y, spk, corp = _corpora(n_per=3)
    seen: list[set[str]] = []
    fit_grid = ClassicalModel.fit_grid

    def spy(self, X_, y_, groups, **kw):
        seen.append({str(g) for g in groups})
        return fit_grid(self, X_, y_, groups, **kw)

    monkeypatch.setattr(ClassicalModel, "fit_grid", spy)
    res = evaluate_loco({"a": X, "b": X * 2.0}, y, spk, corp, estimator="logreg", param_grid=GRID,
                        inner_folds=2, in_corpus_loso=False, progress=False)
    assert len(seen) == 6  # 2 feature sets x 3 held-out corpora
    assert res.table[["feature_set", "held_out_corpus"]].values.tolist() == [
        ["a", "alpha"], ["a", "beta"], ["a", "shifted"], ["b", "alpha"], ["b", "beta"], ["b", "shifted"]]
    for groups, (_, row) in zip(seen, res.table.iterrows(), strict=True):
        held = row["held_out_corpus"]
        assert not any(g.startswith(held + ":") for g in groups)
        # equal ids of other corpora stay distinct speakers: 2 corpora x 3 speakers
        assert len(groups) == 6
        assert res.train_speakers[(row["feature_set"], held)] == tuple(sorted(groups))


def test_bad_input_is_refused():
    X, y, spk, corp = _corpora(n_per=2)
    with pytest.raises(ValueError, match="at least 2 corpora"):
        evaluate_loco({"e": X}, y, spk, np.full(len(y), "alpha"), progress=False)
    with pytest.raises(ValueError, match="one entry per feature row"):
        evaluate_loco({"e": X}, y, spk, corp[:-1], progress=False)
    with pytest.raises(ValueError, match="other rows"):
        evaluate_loco({"e": X, "f": X.iloc[::-1]}, y, spk, corp, progress=False)
    few = spk.copy()
    few[corp == "beta"] = "s1"
    with pytest.raises(ValueError, match="beta has fewer than 3 speakers"):
        evaluate_loco({"e": X}, y, few, corp, progress=False)


def test_writer_replaces_matching_rows(tmp_path):
    X, y, spk, corp = _corpora(n_per=3)
    res = evaluate_loco({"egemaps": X}, y, spk, corp, estimator="logreg", param_grid=GRID,
                        inner_folds=2, in_corpus_loso=False, progress=False)
    path = tmp_path / "tables" / "cross_corpus.csv"
    write_cross_corpus_table(res.table, path)
    normed = res.table.assign(speaker_norm=True, uar=0.5)
    write_cross_corpus_table(normed, path)
    again = res.table.assign(uar=0.25)
    write_cross_corpus_table(again, path)
    out = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert list(out.columns) == list(TABLE_COLUMNS) and len(out) == 6
    assert sorted(out["uar"].tolist()) == [0.25] * 3 + [0.5] * 3
    with pytest.raises(ValueError, match="lacks column"):
        write_cross_corpus_table(res.table.drop(columns="ece"), path)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other.csv"):
        write_cross_corpus_table(res.table, tmp_path / "other.csv")

