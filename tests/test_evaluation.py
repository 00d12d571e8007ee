"""Metrics against scikit-learn and hand-computed cases; bundle evaluation; figures; runs table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from ser.models.bundle import Bundle  # noqa: E402
from ser.train import evaluation, metrics  # noqa: E402

LABELS = ["angry", "happy", "neutral", "sad"]


def _random_preds(seed: int, n: int = 60, k: int = 4):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k - 1, n))  # class k-1 rarely predicted
    return y_true, y_pred


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed):
    y_true, y_pred = _random_preds(seed)
    assert metrics.uar(y_true, y_pred) == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert metrics.weighted_accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    labels = [0, 1, 2, 3]
    np.testing.assert_array_equal(metrics.confusion(y_true, y_pred, labels),
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))
    for norm in ("true", "pred", "all"):
        np.testing.assert_allclose(metrics.confusion(y_true, y_pred, labels, normalize=norm),
                                   skm.confusion_matrix(y_true, y_pred, labels=labels, normalize=norm))
    table = metrics.classification_table(y_true, y_pred, labels)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(table[["precision", "recall", "f1"]].to_numpy(), np.c_[p, r, f])
    np.testing.assert_array_equal(table["support"], s)


def test_metrics_by_hand():
    y_true = ["angry", "angry", "angry", "sad"]
    y_pred = ["angry", "angry", "sad", "sad"]
    assert metrics.uar(y_true, y_pred) == pytest.approx((2 / 3 + 1) / 2)
    assert metrics.weighted_accuracy(y_true, y_pred) == pytest.approx(3 / 4)
    # angry: P=1, R=2/3, F1=0.8; sad: P=1/2, R=1, F1=2/3
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx((0.8 + 2 / 3) / 2)
    # a label absent from y_true and y_pred does not count; UAR ignores classes without support
    assert metrics.uar(y_true, y_pred, labels=LABELS) == pytest.approx(5 / 6)
    assert metrics.macro_f1(y_true, y_pred, labels=LABELS) == pytest.approx((0.8 + 2 / 3) / 2)
    table = metrics.classification_table(y_true, y_pred, LABELS).set_index("label")
    assert table.loc["happy"].tolist() == [0.0, 0.0, 0.0, 0, 0]
    assert table.loc["sad", "n_pred"] == 2
    cm = metrics.confusion(y_true, y_pred, ["angry", "sad"], normalize="true")
    np.testing.assert_allclose(cm, [[2 / 3, 1 / 3], [0, 1]])
    assert np.isnan(metrics.uar([], []))


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match=r"values \['fear'\] are not in labels"):
        metrics.confusion(["angry", "fear"], ["angry", "angry"], ["angry", "sad"])
    with pytest.raises(ValueError, match="equally long"):
        metrics.uar([0, 1], [0])
    with pytest.raises(ValueError, match="normalize must be"):
        metrics.confusion([0], [0], normalize="rows")


def test_sliding_windows_cover_the_utterance():
    wave = np.arange(10, dtype=np.float32)
    w = evaluation.sliding_windows(wave, 4, 3)
    assert w[:, 0].tolist() == [0, 3, 6] and w.shape == (3, 4)
    w = evaluation.sliding_windows(np.arange(11, dtype=np.float32), 4, 3)
    assert w[:, 0].tolist() == [0, 3, 6, 7]  # last window flush with the end
    assert evaluation.sliding_windows(np.ones(2, np.float32), 4, 3).tolist() == [[0, 1, 1, 0]]
    with pytest.raises(ValueError, match="hop must be > 0"):
        evaluation.sliding_windows(wave, 4, 0)


# --------------------------------------------------------------------- evaluate_bundle

SR = 8000
AMPLITUDE = {"angry": 0.8, "happy": 0.4, "neutral": 0.2, "sad": 0.1}


class _LoudnessRule(torch.nn.Module):
    """Predicts the class whose amplitude is closest to the window's RMS * sqrt(2)."""

    def forward(self, wave, *, spec_transform=None):
        amp = wave.square().mean(dim=1).sqrt() * np.sqrt(2)
        ref = torch.tensor([AMPLITUDE[lab] for lab in LABELS])
        return -(amp.log()[:, None] - ref.log()[None, :]).abs() * 10


@pytest.fixture
def rule_bundle(tmp_path):
    meta = {"labels": LABELS, "sample_rate": SR, "window_s": 0.5, "arch": "rule",
            "split": {"train": ["a", "b"], "test": ["t1", "t2"]},
            "created_utc": "2024-01-01T00:00:00+00:00"}
    return Bundle(path=tmp_path, meta=meta, model=_LoudnessRule())


@pytest.fixture
def test_table(tmp_path):
    rows = []
    t = np.arange(int(1.2 * SR)) / SR
    for spk in ("t1", "t2"):
        for lab, amp in AMPLITUDE.items():
            p = tmp_path / f"{spk}_{lab}.wav"
            sf.write(p, amp * np.sin(2 * np.pi * 200 * t), SR, subtype="FLOAT")
            rows.append({"path": str(p), "speaker": spk, "label": lab, "split": "test"})
    # one mislabelled file (a sad-level signal labelled angry), one unreadable, one foreign label
    p = tmp_path / "t2_mislabelled.wav"
    sf.write(p, 0.1 * np.sin(2 * np.pi * 200 * t), SR, subtype="FLOAT")
    rows.append({"path": str(p), "speaker": "t2", "label": "angry", "split": "test"})
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    rows.append({"path": str(tmp_path / "broken.wav"), "speaker": "t2", "label": "sad", "split": "test"})
    rows.append({"path": str(p), "speaker": "t2", "label": "fear", "split": "test"})
    rows.append({"path": str(p), "speaker": "v", "label": "sad", "split": "val"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sliding", [False, True])
def test_evaluate_bundle_scores_the_predictions(rule_bundle, test_table, sliding):
    metrics, pred = evaluation.evaluate_bundle(rule_bundle, test_table, split="test", sliding=sliding,
                                               progress=False)
    assert metrics["n_utterances"] == 9 and metrics["n_failed"] == 1 and metrics["n_ignored_labels"] == 1
    assert metrics["n_speakers"] == 2
    assert metrics["aggregation"] == ("sliding_mean" if sliding else "centre")
    ok = pred[pred["error"].isna()]
    # 8 correct files + the mislabelled one predicted "sad": angry recall 2/3, others 1
    assert metrics["uar"] == pytest.approx((2 / 3 + 1 + 1 + 1) / 4)
    assert metrics["accuracy"] == pytest.approx(8 / 9)
    assert ok.loc[ok["path"].str.endswith("mislabelled.wav"), "pred"].item() == "sad"
    np.testing.assert_allclose(ok[[f"p_{lab}" for lab in LABELS]].sum(axis=1), 1.0, atol=1e-5)
    # 1.2 s utterances, 0.5 s windows every 0.25 s: starts 0, .25, .5 and .7 (flush with the end)
    assert (ok["n_windows"] == (4 if sliding else 1)).all()
    failed = pred[pred["error"].notna()]
    assert len(failed) == 1 and failed["path"].str.endswith("broken.wav").all()


def test_evaluate_bundle_rejects_a_missing_split(rule_bundle, test_table):
    with pytest.raises(ValueError, match=r"split == 'dev'.*splits present: \['test', 'val'\]"):
        evaluation.evaluate_bundle(rule_bundle, test_table, split="dev", progress=False)
    with pytest.raises(ValueError, match=r"lacks columns \['speaker'\]"):
        evaluation.evaluate_bundle(rule_bundle, test_table.drop(columns="speaker"), progress=False)


def test_runs_table_replaces_the_row_of_the_same_model_and_split(rule_bundle, tmp_path):
    path = tmp_path / "runs.csv"
    m = {"split": "test", "n_utterances": 8, "uar": 0.5, "macro_f1": 0.4, "accuracy": 0.5}
    for name, speakers in (("a", ["t2", "t1"]), ("b", ["t1"])):
        row = evaluation.runs_row(rule_bundle, m, model_name=name, speakers=speakers)
        evaluation.update_runs_table(path, row)
    table = evaluation.update_runs_table(
        path, evaluation.runs_row(rule_bundle, {**m, "uar": 0.9}, model_name="a", speakers=["t1", "t2"]))
    assert table["model_name"].tolist() == ["a", "b"]
    assert table.loc[0, "uar"] == 0.9 and table.loc[0, "test_speakers"] == "t1 t2"
    assert table.loc[0, "n_train_speakers"] == 2
    assert list(pd.read_csv(path).columns) == evaluation.RUNS_COLUMNS


def test_figures():
    cm = metrics.confusion(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    ax = evaluation.plot_confusion_matrix(cm, ["a", "b"], title="counts")
    assert [t.get_text() for t in ax.texts] == ["1", "1", "0", "1"]
    ax = evaluation.plot_confusion_matrix(cm / cm.sum(1, keepdims=True), ["a", "b"])
    assert ax.texts[0].get_text() == "0.50"
    with pytest.raises(ValueError, match="does not match 3 labels"):
        evaluation.plot_confusion_matrix(cm, ["a", "b", "c"])
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7],
                            "val_loss": [1.1, 0.9, 1.0], "val_uar": [0.3, 0.6, 0.5]})
    fig = evaluation.plot_history(history)
    assert len(fig.axes) == 2 and "best epoch 2" in fig.axes[1].get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match=r"lacks columns \['val_uar'\]"):
        evaluation.plot_history(history.drop(columns="val_uar"))
    plt.close("all")


def test_runs_row_carries_corpus_aggregation_and_calibration(rule_bundle):
    m = {"split": "test", "aggregation": "centre", "n_utterances": 8, "uar": 0.5, "macro_f1": 0.4,
         "accuracy": 0.5}
    row = evaluation.runs_row(rule_bundle, m, model_name="a", speakers=["t1"], corpus="demo")
    assert row["corpus"] == "demo" and row["aggregation"] == "centre"
    assert row["temperature"] == 1.0 and np.isnan(row["ece"])
    rule_bundle.meta["calibration"] = {"temperature": 2.0, "ece_after": 0.03}
    row = evaluation.runs_row(rule_bundle, m, model_name="a", speakers=["t1"])
    assert row["temperature"] == 2.0 and row["ece"] == 0.03
    assert set(row) == set(evaluation.RUNS_COLUMNS)


# --------------------------------------------------------------------- cross-corpus


def _noise(seed, n=SR * 2):
    return np.random.default_rng(seed).normal(size=n).astype(np.float32) * 0.1


def test_spectral_normalizer_undoes_a_channel_filter_and_level():
    from scipy import signal

    reference = [_noise(i) for i in range(6)]
    b, a = signal.butter(2, 0.25)  # the other corpus: a low-pass microphone, 20 dB quieter
    target = [(0.1 * signal.lfilter(b, a, _noise(10 + i))).astype(np.float32) for i in range(6)]
    norm = evaluation.SpectralNormalizer.fit(reference, target, max_gain_db=30, smooth_bins=3)
    ref_db = evaluation.average_spectrum_db(reference)
    before = evaluation.average_spectrum_db(target)
    after = evaluation.average_spectrum_db([norm(w) for w in target])
    band = slice(5, 150)  # up to ~0.6 x Nyquist, where the low-pass is within 30 dB
    assert np.abs(before - ref_db)[band].max() > 15
    assert np.abs(after - ref_db)[band].max() < 3
    assert norm(target[0]).shape == target[0].shape and norm(target[0]).dtype == np.float32
    with pytest.raises(ValueError, match="needs waveforms of both"):
        evaluation.SpectralNormalizer.fit([], target)


def _write_folder_corpus(root, amplitude, speakers=("x1", "x2")):
    t = np.arange(int(1.2 * SR)) / SR
    for spk in speakers:
        for lab, amp in amplitude.items():
            (root / lab).mkdir(parents=True, exist_ok=True)
            sf.write(root / lab / f"{spk}_000.wav", amp * np.sin(2 * np.pi * 200 * t), SR, subtype="FLOAT")
    (root / "fear").mkdir(exist_ok=True)  # an emotion outside the model's labels
    sf.write(root / "fear" / f"{speakers[0]}_000.wav", 0.5 * np.sin(2 * np.pi * 200 * t), SR)
    (root / "notes.txt").write_text("foreign file")


def test_cross_corpus_with_and_without_level_normalisation(rule_bundle, test_table, tmp_path):
    root = tmp_path / "other"
    _write_folder_corpus(root, {lab: amp / 2 for lab, amp in AMPLITUDE.items()})  # recorded 6 dB lower
    m, pred = evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=root, progress=False)
    assert m["corpus"] == "folder" and m["normalization"] == "none" and m["split"] == "all"
    assert m["n_utterances"] == 8 and m["n_classes"] == 4 and m["chance_uar"] == 0.25
    assert m["n_read_errors"] == 1 and m["n_speakers"] == 2
    assert m["uar"] == pytest.approx(0.25)  # every class looks one level quieter: only sad is right
    assert (pred["corpus"] == "folder").all()
    t1 = test_table[(test_table["split"] == "test") & (test_table["speaker"] == "t1")]
    reference = t1["path"]
    m, pred = evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=root, normalize=True,
                                               reference_paths=reference.tolist(), progress=False)
    assert m["normalization"] == evaluation.SPECTRAL_NORM and m["uar"] == pytest.approx(1.0)
    m, _ = evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=root,
                                            exclude_speakers=["x2"], progress=False)
    assert m["n_speakers"] == 1 and m["n_excluded_speakers"] == 1 and m["n_utterances"] == 4
    m, _ = evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=root,  # multi-corpus ids
                                            exclude_speakers=["folder/x2"], progress=False)
    assert m["n_speakers"] == 1 and m["n_excluded_speakers"] == 1 and m["n_utterances"] == 4
    with pytest.raises(ValueError, match="needs reference_paths"):
        evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=root, normalize=True)
    with pytest.raises(ValueError, match="no utterance with a label in"):
        evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=root,
                                         exclude_speakers=["x1", "x2"], progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluation.evaluate_cross_corpus(rule_bundle, corpus="folder", root=tmp_path / "none")


def test_evaluate_bundle_applies_the_transform(rule_bundle, test_table):
    m, _ = evaluation.evaluate_bundle(rule_bundle, test_table, split="test", progress=False,
                                      transform=lambda w: w * 0 + 0.1 * np.sqrt(0.5))  # all "sad"
    assert m["uar"] == pytest.approx(0.25) and m["n_utterances"] == 9


@pytest.mark.parametrize("sliding", [False, True])
def test_batching_across_utterances_keeps_rows_and_probabilities(rule_bundle, test_table, sliding):
    kw = {"sliding": sliding, "progress": False}
    _, one = evaluation.evaluate_bundle(rule_bundle, test_table, batch_size=1, **kw)
    _, many = evaluation.evaluate_bundle(rule_bundle, test_table, batch_size=5, **kw)
    expected = test_table.loc[(test_table["split"] == "test") & test_table["label"].isin(LABELS), "path"]
    assert one["path"].tolist() == many["path"].tolist() == expected.tolist()
    pd.testing.assert_frame_equal(one, many, atol=1e-6)
