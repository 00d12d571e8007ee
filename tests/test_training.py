"""Training on tiny synthetic tones: learns across speakers, writes the bundle, survives bad
files, resumes exactly, caches decoded audio."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from signals import tone_corpus

from ser.models.bundle import load_bundle
from ser.train import evaluation, loop

SR = 8000
LABELS = ["angry", "happy", "neutral", "sad"]
F0 = {"angry": 1200.0, "happy": 600.0, "neutral": 300.0, "sad": 150.0}  # class = pitch octave
SPLIT = {"s1": "train", "s2": "train", "s3": "val", "s4": "test"}
TINY = dict(labels=LABELS, arch="small_cnn", arch_params={"channels": [8, 16], "dropout": 0.0},
            features={"n_mels": 24, "n_fft": 256, "hop_length": 80}, window_s=0.5, sample_rate=SR,
            batch_size=16, lr=3e-3, weight_decay=0.0, patience=5, seed=0, device="cpu", progress=False)


def _corpus(root, *, n_per: int = 6, seed: int = 0) -> pd.DataFrame:
    """Harmonic tones whose pitch codes the class, per-speaker pitch offset, 0.3-0.9 s."""
    return tone_corpus(root, split=SPLIT, f0=F0, sr=SR, n_per=n_per, max_s=0.9, seed=seed)


@pytest.fixture(scope="module", autouse=True)
def results_in_tmp(tmp_path_factory):
    """The default waveform cache (results/cache) goes to a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_RESULTS_DIR", str(tmp_path_factory.mktemp("results")))
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    df = _corpus(root)
    (root / "truncated.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")  # unreadable
    sf.write(root / "blip.wav", np.full(int(0.1 * SR), 0.1, np.float32), SR)  # < min_duration_s
    bad = {"path": str(root / "truncated.wav"), "speaker": "s1", "label": "sad", "split": "train"}
    blip = {"path": str(root / "blip.wav"), "speaker": "s2", "label": "happy", "split": "train"}
    other = {**df.iloc[0].to_dict(), "label": "boredom"}  # a label outside the set: ignored
    return pd.concat([df, pd.DataFrame([bad, blip, other])], ignore_index=True)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    return loop.train(corpus, out_dir=out, epochs=2, **TINY)


def test_two_epochs_beat_chance_on_a_held_out_speaker(trained, corpus):
    bundle = load_bundle(trained)
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
    assert tp["n_too_short"] == 1 and tp["n_unknown_label"] == 1 and tp["class_weighting"]
    assert tp["utterances_per_corpus"] == {"": {lab: 12 for lab in LABELS}}  # no corpus column
    assert meta["arch_params"] == {"channels": [8, 16], "dropout": 0.0, "freq_bins": 4, "pooled_blocks": 0,
                                   "block_convs": [1, 1]}
    assert not (trained / loop.CHECKPOINT_NAME).exists()  # removed once the bundle is written
    assert tp["epochs_run"] == 2 and tp["best_epoch"] in (1, 2)
    history = pd.read_csv(trained / "history.csv")
    assert list(history.columns) == loop.HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2]
    assert meta["metrics"]["val"]["uar"] == pytest.approx(history["val_uar"].max())
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_set_aside_files_are_named_and_training_continues(trained):
    errors = pd.read_csv(trained / "train_errors.csv")
    assert list(errors.columns) == ["path", "reason"]
    assert [p.rsplit("/", 1)[-1] for p in errors["path"]] == ["truncated.wav", "blip.wav", "s1_angry_0.wav"]
    unreadable, short, label = errors["reason"]
    assert "truncated.wav" in unreadable
    assert short.startswith("too short: 0.100 s < min_duration_s=0.25 s")
    assert label.startswith("label 'boredom' is not in labels ['angry', 'happy', 'neutral', 'sad']")


def test_set_aside_files_are_logged(corpus, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="ser.train.loop"):
        loop.train(corpus, out_dir=tmp_path / "m", **{**TINY, "epochs": 1, "arch_params": {"channels": [4]}})
    text = caplog.text
    assert "truncated.wav" in text and "blip.wav" in text and "'boredom'" in text


def test_same_seed_same_run(corpus, tmp_path):
    kw = {**TINY, "arch_params": {"channels": [4], "dropout": 0.2}}
    a = loop.train(corpus, out_dir=tmp_path / "a", epochs=1, **kw)
    b = loop.train(corpus, out_dir=tmp_path / "b", epochs=1, **kw)
    cols = ["train_loss", "val_loss", "val_uar"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv")[cols],
                                  pd.read_csv(b / "history.csv")[cols])
    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    np.testing.assert_array_equal(load_bundle(a).predict_proba(x),
                                  load_bundle(b).predict_proba(x))


def test_early_stopping_stops_after_patience(corpus, tmp_path):
    kw = {**TINY, "arch_params": {"channels": [4], "dropout": 0.0}, "patience": 1, "lr": 1e-9}
    out = loop.train(corpus, out_dir=tmp_path / "m", epochs=6, **kw)
    history = pd.read_csv(out / "history.csv")
    assert len(history) < 6  # a learning rate of 1e-9 cannot keep improving the UAR


def test_bad_inputs_are_rejected(corpus, tmp_path):
    kw = {**TINY, "epochs": 1}
    with pytest.raises(ValueError, match=r"lacks columns \['split'\]"):
        loop.train(corpus.drop(columns="split"), out_dir=tmp_path / "x", **kw)
    with pytest.raises(ValueError, match=r"no rows with split == 'val'"):
        loop.train(corpus[corpus["split"] != "val"], out_dir=tmp_path / "x", **kw)
    with pytest.raises(ValueError, match=r"labels \['fear'\] have no readable training utterances"):
        loop.train(corpus, out_dir=tmp_path / "x", **{**kw, "labels": [*LABELS, "fear"]})
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        loop.train(corpus, out_dir=tmp_path / "x", **{**kw, "epochs": 0})


def test_class_weights_are_inverse_frequency():
    w = loop.class_weights(np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1)])
    with pytest.raises(ValueError, match=r"class indices \[2\] have no training samples"):
        loop.class_weights(np.array([0, 1]), 3)


def _interrupt_after_validations(monkeypatch, n: int) -> None:
    """Make the n-th validation raise, as if the process died in that epoch."""
    calls = {"n": 0}
    real = loop._validate

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_validate", flaky)


def test_resume_after_a_crash_gives_the_uninterrupted_result(corpus, tmp_path, monkeypatch):
    kw = {**TINY, "arch_params": {"channels": [4, 8], "dropout": 0.2}, "epochs": 3, "mixup_alpha": 0.4}
    whole = loop.train(corpus, out_dir=tmp_path / "whole", **kw)
    _interrupt_after_validations(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(corpus, out_dir=tmp_path / "part", **kw)
    ckpt = tmp_path / "part" / loop.CHECKPOINT_NAME
    assert ckpt.is_file() and not (tmp_path / "part" / "model.json").exists()
    assert len(pd.read_csv(tmp_path / "part" / "history.csv")) == 1
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other settings or data.*resume=False"):
        loop.train(corpus, out_dir=tmp_path / "part", resume=True, **{**kw, "lr": 1e-4})
    part = loop.train(corpus, out_dir=tmp_path / "part", resume=True, **kw)
    cols = ["epoch", "train_loss", "val_loss", "val_uar", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(part / "history.csv")[cols],
                                  pd.read_csv(whole / "history.csv")[cols])
    x = np.random.default_rng(0).standard_normal((3, 4000)).astype(np.float32)
    np.testing.assert_array_equal(load_bundle(part).predict_proba(x),
                                  load_bundle(whole).predict_proba(x))
    assert json.loads((part / "model.json").read_text())["train_params"]["resumed"] is True


def test_window_dataset_depends_only_on_seed_epoch_and_index():
    wave = np.linspace(-0.5, 0.5, 6000, dtype=np.float32)
    ds = loop.WindowDataset([wave, wave[:1000]], np.array([0, 1]), 4000, train=True, seed=3,
                                augment={"noise_prob": 1.0, "snr_db": [10.0, 10.0]})
    a, ya = ds[(2, 0)]
    assert np.array_equal(a, ds[(2, 0)][0]) and ya == 0
    assert not np.array_equal(a, ds[(3, 0)][0])
    clean = loop.WindowDataset([wave], np.array([0]), 4000, train=True, seed=3)[(2, 0)][0]
    noise = a - clean  # same crop, plus white noise at 10 dB SNR
    assert 10 * np.log10(np.mean(clean ** 2) / np.mean(noise ** 2)) == pytest.approx(10.0, abs=0.5)
    plain = loop.WindowDataset([wave[:1000]], np.array([1]), 4000, train=True, seed=3)
    short = plain[(1, 0)][0]
    assert len(short) == 4000 and np.count_nonzero(short) == 1000  # zero-padded, not stretched
    centre = loop.WindowDataset([wave], np.array([0]), 4000, train=False, seed=3)[0][0]
    np.testing.assert_array_equal(centre, wave[1000:5000])


def test_waveform_cache_is_used_on_the_second_read(corpus, tmp_path, monkeypatch):
    files = corpus["path"].iloc[:3].tolist()
    first, errors = loop.load_waveforms(files, sample_rate=SR, progress=False, cache_dir=tmp_path)
    assert errors.empty and len(list((tmp_path / "waveforms").glob("*.npy"))) == 3
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(loop.audio, "load", no_decoding)
    again, _ = loop.load_waveforms(files, sample_rate=SR, progress=False, cache_dir=tmp_path)
    for p in files:
        np.testing.assert_array_equal(again[p], first[p])
    with pytest.raises(AssertionError, match="decoded"):  # another rate is another key
        loop.load_waveforms(files[:1], sample_rate=SR // 2, progress=False, cache_dir=tmp_path)


def test_bad_new_options_are_rejected(corpus, tmp_path):
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        loop.train(corpus, out_dir=tmp_path / "x", **{**TINY, "mixup_alpha": -1.0})
    with pytest.raises(ValueError, match="min_duration_s must be >= 0"):
        loop.train(corpus, out_dir=tmp_path / "x", **{**TINY, "min_duration_s": -0.1})
    with pytest.raises(ValueError, match=r"augment: unknown keys \['pitch'\]"):
        loop.train(corpus, out_dir=tmp_path / "x", **{**TINY, "augment": {"pitch": 2}})


def test_load_waveforms_reads_each_file_once_and_lists_failures(corpus, tmp_path):
    good = corpus["path"].iloc[0]
    waves, errors = loop.load_waveforms([good, good, tmp_path / "missing.wav"], sample_rate=16000,
                                            progress=False)
    assert list(waves) == [good]
    assert len(waves[good]) == pytest.approx(2 * corpus["duration_s"].iloc[0] * SR, abs=1)  # resampled
    assert errors["path"].tolist() == [str(tmp_path / "missing.wav")]
    assert "does not exist" in errors["reason"].iloc[0]


def test_command_line_trains_from_a_params_file(corpus, tmp_path):
    """``python -m ser.train.loop`` is what torchrun launches; notebook-only keys are ignored."""
    import yaml

    params = {**{k: v for k, v in TINY.items() if k != "progress"}, "model_name": "ignored", "epochs": 1,
              "arch_params": {"channels": [4]}, "num_workers": -1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    corpus.to_csv(tmp_path / "u.csv", index=False)
    out = loop.main(["--utterances", str(tmp_path / "u.csv"), "--out", str(tmp_path / "cli"),
                         "--params", str(tmp_path / "p.yaml")])
    meta = json.loads((out / "model.json").read_text())
    assert meta["train_params"]["epochs_run"] == 1 and meta["train_params"]["world_size"] == 1
    assert meta["arch_params"]["channels"] == [4]


def test_utterances_seen_counts_per_corpus_and_label():
    train = pd.DataFrame({"corpus": ["emodb", "emodb", "emovo", "emovo", "emovo"],
                          "label": ["angry", "sad", "angry", "angry", "happy"]})
    assert loop.utterances_seen(train, ["angry", "happy", "sad"]) == {
        "emodb": {"angry": 1, "happy": 0, "sad": 1}, "emovo": {"angry": 2, "happy": 1, "sad": 0}}


def test_single_corpus_training_is_unchanged_by_corpus_balancing(corpus, tmp_path):
    """One corpus: balance_corpora on (the default) trains exactly as without it."""
    kw = {**TINY, "arch_params": {"channels": [4], "dropout": 0.2}}
    one = corpus.assign(corpus="tones")
    a = loop.train(one, out_dir=tmp_path / "a", epochs=2, balance_corpora=True, **kw)
    b = loop.train(one, out_dir=tmp_path / "b", epochs=2, balance_corpora=False, **kw)
    cols = ["train_loss", "val_loss", "val_uar"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv")[cols], pd.read_csv(b / "history.csv")[cols])
    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    np.testing.assert_array_equal(load_bundle(a).predict_proba(x), load_bundle(b).predict_proba(x))
    assert json.loads((a / "model.json").read_text())["train_params"]["balance_corpora"] is False


def test_two_corpora_are_balanced_and_the_class_weights_follow(corpus, tmp_path, monkeypatch):
    """Speaker s1 is corpus "big" (and a second copy of it), s2 corpus "small": balanced
    sampling is used, recorded, and changes the run; class weights come from the epoch mix."""
    big = corpus[corpus["speaker"] == "s1"]
    two = pd.concat([corpus.assign(corpus="small"), big.assign(corpus="big", path=big["path"])],
                    ignore_index=True)
    two.loc[two["speaker"] == "s1", "corpus"] = "big"
    used = []
    real = loop.CorpusBalancedSampler

    def spy(*args, **kwargs):
        used.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "CorpusBalancedSampler", spy)
    kw = {**TINY, "arch_params": {"channels": [4], "dropout": 0.0}}
    out = loop.train(two, out_dir=tmp_path / "m", epochs=1, **kw)
    assert len(used) == 1 and set(used[0]) == {"big", "small"}
    tp = json.loads((out / "model.json").read_text())["train_params"]
    assert tp["balance_corpora"] is True
    assert set(tp["utterances_per_corpus"]) == {"big", "small"}
    off = loop.train(two, out_dir=tmp_path / "off", epochs=1, balance_corpora=False, **kw)
    assert json.loads((off / "model.json").read_text())["train_params"]["balance_corpora"] is False
    assert len(used) == 1
