"""Tests of ser.train.cross_corpus_eval: leave-one-corpus-out evaluation of the classical family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ser.models.classical.estimator import ClassicalModel
from ser.train.cross_corpus_eval import (
    TABLE_COLUMNS,
    evaluate_loco,
    loco_from_utterances,
    plot_loco,
    write_cross_corpus_table,
)

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



def test_train_only_rows_train_but_are_never_tested():
    X, y, spk, corp = _corpora()
    copies = X.set_axis([f"aug_{i}" for i in X.index]) + 0.01
    X2 = pd.concat([X, copies])
    extra = np.r_[np.zeros(len(X), bool), np.ones(len(X), bool)]
    res = evaluate_loco({"egemaps": X2}, np.r_[y, y], np.r_[spk, spk], np.r_[corp, corp],
                        estimator="logreg", param_grid=GRID, inner_folds=3, progress=False,
                        train_only=extra)
    n = len(y)
    t = res.table
    assert (t["n_test"] == n // 3).all()
    assert (t["n_train"] == 2 * (n - n // 3)).all()  # originals and copies of the other corpora
    assert not res.predictions.index.str.startswith("aug_").any()
    assert t["in_corpus_loso_uar"].notna().all()  # the LOSO runs on originals only
    with pytest.raises(ValueError, match="train_only"):
        evaluate_loco({"egemaps": X}, y, spk, corp, estimator="logreg", param_grid=GRID,
                      train_only=[True], progress=False)


def test_train_only_rows_are_never_scored_in_the_inner_folds(monkeypatch):
    from ser.models.classical.estimator import ClassicalModel

    seen = []
    fit_grid = ClassicalModel.fit_grid

    def spy(self, *args, **kwargs):
        out = fit_grid(self, *args, **kwargs)
        seen.append((kwargs.get("scored"), self.inner_splits_))
        return out

    monkeypatch.setattr(ClassicalModel, "fit_grid", spy)
    X, y, spk, corp = _corpora()
    copies = X.set_axis([f"aug_{i}" for i in X.index]) + 0.01
    extra = np.r_[np.zeros(len(X), bool), np.ones(len(X), bool)]
    evaluate_loco({"egemaps": pd.concat([X, copies])}, np.r_[y, y], np.r_[spk, spk], np.r_[corp, corp],
                  estimator="logreg", param_grid=GRID, inner_folds=3, progress=False, train_only=extra,
                  in_corpus_loso=False)
    assert len(seen) == 3
    for scored, splits in seen:
        assert scored is not None and scored.sum() == len(scored) // 2  # originals, then their copies
        assert all(scored[va].all() for _, va in splits) and all((~scored[tr]).any() for tr, _ in splits)


def _tone_corpora(root):
    """3 corpora x 3 speakers x 4 classes x 2 files: class = pitch, corpus = a level offset."""
    import soundfile as sf

    sr = 16000
    f0 = {"angry": 400.0, "happy": 300.0, "neutral": 200.0, "sad": 120.0}
    rows = []
    for c, gain in (("alpha", 0.1), ("beta", 0.2), ("gamma", 0.05)):
        for s in ("s1", "s2", "s3"):
            for lab, f in f0.items():
                for k in range(2):
                    t = np.arange(int(0.5 * sr)) / sr
                    y = gain * np.sin(2 * np.pi * f * (1 + 0.02 * k) * t)
                    path = root / c / f"{s}_{lab}_{k}.wav"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(path, y.astype(np.float32), sr)
                    rows.append({"path": str(path), "label": lab, "speaker": f"{c}/{s}", "corpus": c,
                                 "language": "xx", "split": "train"})
    return pd.DataFrame(rows)


def test_loco_from_utterances_extracts_caches_and_plots(tmp_path):
    utt = _tone_corpora(tmp_path)
    broken = tmp_path / "alpha" / "broken.wav"
    broken.write_bytes(b"not audio")
    utt = pd.concat([utt, pd.DataFrame([{"path": str(broken), "label": "sad", "speaker": "alpha/s1",
                                         "corpus": "alpha", "language": "xx", "split": "test"}])],
                    ignore_index=True)
    res, errors = loco_from_utterances(utt, feature_sets=("mfcc_stats",), estimator="logreg",
                                       cache_dir=tmp_path / "cache", inner_folds=3)
    assert errors["path"].tolist() == [str(broken)]  # named, not silently dropped
    t = res.table
    assert t["held_out_corpus"].tolist() == ["alpha", "beta", "gamma"]
    assert (t["n_test"] == 24).all() and set(t["language"]) == {"xx"}
    assert t["uar"].between(0, 1).all() and t["in_corpus_loso_uar"].notna().all()
    assert t["ece"].notna().all()
    assert any((tmp_path / "cache").rglob("*"))  # features cached for the next run
    ax = plot_loco(t, n_classes=4)
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [*t["in_corpus_loso_uar"], *t["uar"]])
    with pytest.raises(ValueError, match="at least 2 corpora"):
        loco_from_utterances(utt[utt["corpus"] == "alpha"], feature_sets=("mfcc_stats",))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['corpus'\]"):
        loco_from_utterances(utt.drop(columns="corpus"))


def test_stage_03_loco_cells_write_the_table(tmp_path, monkeypatch):
    """The last cells of notebooks/03_evaluate.ipynb, run on a 3-corpus utterance table."""
    import json

    import matplotlib
    import matplotlib.pyplot as plt

    from ser.core import paths

    matplotlib.use("Agg")
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    nb = json.loads((paths.ROOT / "notebooks" / "03_evaluate.ipynb").read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    start = next(i for i, s in enumerate(code) if "loco_from_utterances" in s)
    ns = {"utterances": _tone_corpora(tmp_path / "audio"), "paths": paths, "plt": plt, "pd": pd,
          "display": lambda *a, **k: None, "loco": True, "loco_feature_sets": ["mfcc_stats"],
          "loco_estimator": "logreg"}
    for src in code[start:]:
        exec(compile(src, "03_evaluate.ipynb", "exec"), ns)
    out = pd.read_csv(paths.tables_dir() / "cross_corpus.csv")
    assert list(out.columns) == list(TABLE_COLUMNS)
    assert out["held_out_corpus"].tolist() == ["alpha", "beta", "gamma"] and out["speaker_norm"].all()
    ns.update(loco=False)
    for src in code[start:]:
        exec(compile(src, "03_evaluate.ipynb", "exec"), ns)
    assert ns["loco_table"] is None
