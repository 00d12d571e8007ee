"""Training on tiny synthetic tones: learns across speakers, writes the bundle, survives bad files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser import evaluation, models, training

SR = 8000
LABELS = ["angry", "happy", "neutral", "sad"]
F0 = {"angry": 1200.0, "happy": 600.0, "neutral": 300.0, "sad": 150.0}  # class = pitch octave
SPLIT = {"s1": "train", "s2": "train", "s3": "val", "s4": "test"}
TINY = dict(labels=LABELS, arch="small_cnn", arch_params={"channels": [8, 16], "dropout": 0.0},
            features={"n_mels": 24, "n_fft": 256, "hop_length": 80}, window_s=0.5, sample_rate=SR,
            batch_size=16, lr=3e-3, weight_decay=0.0, patience=5, seed=0, device="cpu", progress=False)


def _corpus(root, *, n_per: int = 6, seed: int = 0) -> pd.DataFrame:
    """Harmonic tones whose pitch codes the class, per-speaker pitch offset, 0.3-0.9 s."""
    rng = np.random.default_rng(seed)
    rows = []
    for spk, part in SPLIT.items():
        offset = rng.uniform(0.9, 1.1)
        for lab, f0 in F0.items():
            for k in range(n_per):
                t = np.arange(int(rng.uniform(0.3, 0.9) * SR)) / SR
                phase = 2 * np.pi * f0 * offset * t
                y = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * rng.uniform(0.05, 0.3)
                y = y + 0.005 * rng.standard_normal(len(t))
                path = root / f"{spk}_{lab}_{k}.wav"
                sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
                rows.append({"path": str(path), "speaker": spk, "label": lab, "split": part,
                             "duration_s": len(t) / SR, "sample_rate": SR})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    df = _corpus(root)
    (root / "truncated.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")  # unreadable
    bad = {"path": str(root / "truncated.wav"), "speaker": "s1", "label": "sad", "split": "train"}
    other = {**df.iloc[0].to_dict(), "label": "boredom"}  # a label outside the set: ignored
    return pd.concat([df, pd.DataFrame([bad, other])], ignore_index=True)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    return training.train(corpus, out_dir=out, epochs=2, **TINY)


def test_two_epochs_beat_chance_on_a_held_out_speaker(trained, corpus):
    bundle = models.load_bundle(trained)
    metrics, pred = evaluation.evaluate_bundle(bundle, corpus, split="test", progress=False)
    assert set(pred["speaker"]) == {"s4"}
    assert metrics["n_utterances"] == 24
    assert metrics["uar"] > 0.5  # chance = 0.25


def test_bundle_and_history_are_written(trained):
    for name in ("model.json", "model.pt", "history.csv", "train_errors.csv"):
        assert (trained / name).is_file(), name
    meta = json.loads((trained / "model.json").read_text())
    assert meta["labels"] == LABELS and meta["sample_rate"] == SR and meta["window_s"] == 0.5
    assert meta["split"] == {"test": ["s4"], "train": ["s1", "s2"], "val": ["s3"]}
    tp = meta["train_params"]
    assert tp["n_train"] == 48 and tp["n_val"] == 24 and tp["n_failed"] == 1 and tp["n_ignored_labels"] == 1
    assert tp["epochs_run"] == 2 and tp["best_epoch"] in (1, 2)
    history = pd.read_csv(trained / "history.csv")
    assert list(history.columns) == training.HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2]
    assert meta["metrics"]["val"]["uar"] == pytest.approx(history["val_uar"].max())
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_unreadable_file_is_recorded_and_training_continues(trained):
    errors = pd.read_csv(trained / "train_errors.csv")
    assert list(errors.columns) == ["path", "reason"]
    assert len(errors) == 1 and errors["path"].iloc[0].endswith("truncated.wav")
    assert "truncated.wav" in errors["reason"].iloc[0]


def test_same_seed_same_run(corpus, tmp_path):
    kw = {**TINY, "arch_params": {"channels": [4], "dropout": 0.2}}
    a = training.train(corpus, out_dir=tmp_path / "a", epochs=1, **kw)
    b = training.train(corpus, out_dir=tmp_path / "b", epochs=1, **kw)
    cols = ["train_loss", "val_loss", "val_uar"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv")[cols],
                                  pd.read_csv(b / "history.csv")[cols])
    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    np.testing.assert_array_equal(models.load_bundle(a).predict_proba(x),
                                  models.load_bundle(b).predict_proba(x))


def test_early_stopping_stops_after_patience(corpus, tmp_path):
    kw = {**TINY, "arch_params": {"channels": [4], "dropout": 0.0}, "patience": 1, "lr": 1e-9}
    out = training.train(corpus, out_dir=tmp_path / "m", epochs=6, **kw)
    history = pd.read_csv(out / "history.csv")
    assert len(history) < 6  # a learning rate of 1e-9 cannot keep improving the UAR


def test_bad_inputs_are_rejected(corpus, tmp_path):
    kw = {**TINY, "epochs": 1}
    with pytest.raises(ValueError, match=r"lacks columns \['split'\]"):
        training.train(corpus.drop(columns="split"), out_dir=tmp_path / "x", **kw)
    with pytest.raises(ValueError, match=r"no rows with split == 'val'"):
        training.train(corpus[corpus["split"] != "val"], out_dir=tmp_path / "x", **kw)
    with pytest.raises(ValueError, match=r"labels \['fear'\] have no readable training utterances"):
        training.train(corpus, out_dir=tmp_path / "x", **{**kw, "labels": [*LABELS, "fear"]})
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        training.train(corpus, out_dir=tmp_path / "x", **{**kw, "epochs": 0})


def test_class_weights_are_inverse_frequency():
    w = training.class_weights(np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1)])
    with pytest.raises(ValueError, match=r"class indices \[2\] have no training samples"):
        training.class_weights(np.array([0, 1]), 3)


def test_load_waveforms_reads_each_file_once_and_lists_failures(corpus, tmp_path):
    good = corpus["path"].iloc[0]
    waves, errors = training.load_waveforms([good, good, tmp_path / "missing.wav"], sample_rate=16000,
                                            progress=False)
    assert list(waves) == [good]
    assert len(waves[good]) == pytest.approx(2 * corpus["duration_s"].iloc[0] * SR, abs=1)  # resampled
    assert errors["path"].tolist() == [str(tmp_path / "missing.wav")]
    assert "does not exist" in errors["reason"].iloc[0]
