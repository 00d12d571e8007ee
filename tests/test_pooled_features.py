"""Pooled LLD feature sets (ser.models.classical.pooled): the same pooling in training and
in block-wise inference, and the classical bundle's block path."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from signals import voiced
from threadpoolctl import threadpool_limits

from ser.inference import recording
from ser.inference.options import InferenceOptions
from ser.inference.protocol import FeatureJobBundle
from ser.models.classical import bundle as classical_bundle
from ser.models.classical import features, pooled, writer
from ser.models.classical.estimator import ClassicalModel

SR = 16000


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _speech(seconds: float, *, f0: float, seed: int) -> np.ndarray:
    return voiced(seconds, f0=f0, seed=seed)


def test_pool_frames_gives_the_nan_aware_statistics_of_each_window():
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((400, 4))
    frames[rng.random(frames.shape) < 0.3] = np.nan
    frames[:, 1] = rng.standard_normal(400)  # one descriptor with a value in every frame
    frames[100:300, 3] = np.nan  # a window with no value of a descriptor
    t = np.arange(400) * pooled.FRAME_STEP_S
    starts = np.array([0.0, 0.5, 1.0, 1.5, 3.0])
    got = pooled.pool_frames(frames, t, starts, 1.0)  # 100 frames per window
    assert got.shape == (5, 4 * len(pooled.STATISTICS)) and got.dtype == np.float32
    for i, s in enumerate(starts):
        x = frames[int(round(s * 100)):int(round(s * 100)) + 100]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN descriptor: NaN expected
            ref = np.stack([np.nanmean(x, 0), np.nanstd(x, 0), *np.nanpercentile(x, [10, 50, 90], axis=0)], 1)
        np.testing.assert_allclose(got[i].reshape(4, -1), ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(got[2].reshape(4, -1)[3]).all()  # frames 100..199 of descriptor 3 are all NaN
    # a window's statistics do not depend on the windows pooled with it
    alone = np.vstack([pooled.pool_frames(frames, t, starts[i:i + 1], 1.0) for i in range(5)])
    np.testing.assert_array_equal(alone, got)
    # a window past the last frame has no frames: NaN
    assert np.isnan(pooled.pool_frames(frames, t, np.array([10.0]), 1.0)).all()


def test_deltas_are_the_regression_slope():
    x = np.arange(10.0)[:, None] * np.array([[1.0, -2.0]])
    d = pooled.deltas(x)
    np.testing.assert_allclose(d[2:-2], [[1.0, -2.0]] * 6)  # inside: the slope
    assert d[0, 0] == pytest.approx((1 * (1 - 0) + 2 * (2 - 0)) / 10)  # edge repeats the first frame


@pytest.mark.parametrize("feature_set", list(pooled.POOLED_SETS))
def test_per_utterance_features_equal_the_block_path_on_a_window_spanning_the_file(tmp_path, feature_set):
    """Training extracts pooled sets per utterance; inference pools block LLDs per window:
    on the same audio they are the same numbers, bit for bit."""
    y = _speech(2.5, f0=190.0, seed=1)
    wav = tmp_path / "utt.wav"
    sf.write(wav, y, SR, subtype="FLOAT")
    X, err = features.extract_features([wav], feature_set=feature_set, n_jobs=1, progress=False)
    assert err.empty and X.shape == (1, len(pooled.feature_names(feature_set)))
    assert list(X.columns) == pooled.feature_names(feature_set)
    assert X.shape[1] == {"compare_lld_pooled": 650, "egemaps_lld_pooled": 250}[feature_set]
    job = classical_bundle.BlockFeatures((feature_set,), SR, len(y))
    block = job(y, np.array([0]))[feature_set]
    np.testing.assert_array_equal(X.to_numpy()[0], block[0])
    # and a window inside a longer block pools exactly the block's frames of that window
    long = np.concatenate([_speech(1.0, f0=230.0, seed=2), y, _speech(1.0, f0=150.0, seed=3)])
    starts_s, frames = pooled.lld_frames(long, SR, feature_set=feature_set)
    w = classical_bundle.BlockFeatures((feature_set,), SR, len(y))(long, np.array([SR]))[feature_set]
    np.testing.assert_array_equal(w, pooled.pool_frames(frames, starts_s, np.array([1.0]), len(y) / SR))
    assert features.feature_config(feature_set, sample_rate=SR)["level"] == "LowLevelDescriptors"


def _pooled_bundle(tmp_path, feature_set="egemaps_lld_pooled"):
    windows, labels, speakers = [], [], []
    for k, (lab, f0) in enumerate({"low": 130.0, "mid": 200.0, "high": 300.0}.items()):
        for i in range(6):
            windows.append(_speech(1.0, f0=f0 * (1 + 0.03 * i), seed=10 * k + i))
            labels.append(lab)
            speakers.append(f"s{i % 3}")
    W = np.stack(windows)
    X = features.signal_features(W, feature_set=feature_set, sample_rate=SR)
    model = ClassicalModel(estimator="logreg", params={"C": 0.1}).fit(X, np.array(labels), np.array(speakers))
    out = writer.save_classical_bundle(tmp_path / "bundle", model, labels=["high", "low", "mid"],
                                       feature_set=feature_set, sample_rate=SR, window_s=1.0)
    return classical_bundle.load_classical_bundle(out)


def test_classical_bundle_block_path_agrees_with_the_per_window_path(tmp_path):
    b = _pooled_bundle(tmp_path)
    assert isinstance(b, FeatureJobBundle)
    signal = np.concatenate([_speech(2.0, f0=f, seed=40 + i) for i, f in enumerate((135.0, 290.0, 205.0))])
    starts = np.arange(0, len(signal) - SR + 1, SR // 2)
    block = b.predict_starts(signal, starts, batch_size=8)
    alone = b.predict_proba(np.stack([signal[s:s + SR] for s in starts]))
    assert block.shape == alone.shape == (len(starts), 3)
    np.testing.assert_allclose(block.sum(1), 1.0, atol=1e-5)
    # the two differ only through the LLDs' context at the window edges: much where a
    # window starts right after another voice (its first frames' smoothing and deltas
    # hear that voice in the block, silence alone), little elsewhere
    diff = np.abs(block - alone).max(axis=1)
    after_change = np.isin(starts, [2 * SR, 4 * SR])
    assert diff[~after_change].max() < 0.05
    assert (block.argmax(1) == alone.argmax(1)).mean() >= 0.8
    # with nothing around the window, the block path is the per-window path exactly
    np.testing.assert_array_equal(b.predict_starts(signal[:SR], np.array([0]), batch_size=1),
                                  b.predict_proba(signal[None, :SR]))
    assert b.predict_starts(signal, np.zeros(0, np.int64), batch_size=1).shape == (0, 3)
    with pytest.raises(ValueError, match="window starts must lie"):
        b.predict_starts(signal, np.array([len(signal) - 10]), batch_size=1)


def test_windowed_inference_computes_pooled_features_in_the_workers_with_equal_results(tmp_path):
    b = _pooled_bundle(tmp_path)
    wav = tmp_path / "rec.wav"
    sf.write(wav, np.concatenate([_speech(3.0, f0=f, seed=50 + i) for i, f in enumerate((140.0, 280.0, 210.0))]),
             SR, subtype="FLOAT")
    timings: dict[str, float] = {}
    inline = recording.predict_recording(b, wav, options=InferenceOptions(workers=0, block_s=4.0))
    split = recording.predict_recording(b, wav, options=InferenceOptions(workers=1, block_s=4.0),
                                        timings=timings)
    assert "model_features" in timings and "model" in timings  # the split path ran
    pd.testing.assert_frame_equal(inline, split)
    assert len(split) == 17 and split.filter(regex="^p_").notna().all().all()


@pytest.mark.parametrize("feature_set", list(pooled.POOLED_SETS))
def test_lld_frames_are_the_llds_and_times_of_opensmile_smile(feature_set):
    """lld_frames runs openSMILE with its own sinks (no Python call per frame) and without the
    set's functionals: the LLD values and frame starts are exactly those of opensmile.Smile
    at the LowLevelDescriptors level (times through its pandas index; ComParE's last frame
    repeats the time before it), also for a signal shorter than one frame (one NaN frame)."""
    import opensmile

    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, pooled.POOLED_SETS[feature_set]),
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    d = len(smile.feature_names)
    rng = np.random.default_rng(4)
    for n in (500, 1200, 16_003, 3 * SR + 77):
        y = np.concatenate([_speech(n / SR, f0=170.0, seed=n), 0.01 * rng.standard_normal(n)])[:n]
        y = y.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "too short" for n=500, from both
            ref = smile.process_signal(y, SR)
            starts_s, frames = pooled.lld_frames(y, SR, feature_set=feature_set)
        lld = ref.to_numpy(dtype=np.float64)
        ref_starts = ref.index.get_level_values("start").total_seconds().to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(starts_s, ref_starts)
        # frames: the LLDs (NaN where a voiced-only descriptor is 0), then their |deltas|
        got = frames[:, :d]
        np.testing.assert_array_equal(np.where(np.isnan(got), 0.0, got), np.nan_to_num(lld, nan=0.0))
        assert np.array_equal(np.isnan(got) & ~np.isnan(lld), (lld == 0) & np.isnan(got))
        if n > 1000:
            assert len(lld) > 2 and not np.isnan(lld).all()


def test_pool_frames_equals_numpys_nan_statistics_to_the_last_float32_bit():
    """The pooled statistics (sorted per window along a contiguous copy, means and variances
    summed in frame order) are numpy's NaN-aware mean, std and linear percentiles of each
    window's frames, rounded to float32, whatever the window lengths and NaN patterns."""
    rng = np.random.default_rng(7)
    frames = rng.standard_normal((900, 6)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0, 100.0])
    frames[rng.random(frames.shape) < 0.2 * np.array([0, 0, 1, 1, 2, 4])] = np.nan  # 0 %..80 % missing
    t = np.arange(900) * pooled.FRAME_STEP_S
    starts = np.concatenate([np.arange(0.0, 7.0, 0.5), [0.013, 2.2, 8.5]])
    for window_s in (0.2, 1.0, 2.0, 2.37):
        got = pooled.pool_frames(frames, t, starts, window_s)
        for i, s in enumerate(starts):
            x = frames[(t >= s - 1e-6) & (t < s + window_s - 1e-6)]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ref = np.stack([np.nanmean(x, 0), np.nanstd(x, 0), *np.nanpercentile(x, [10, 50, 90], axis=0)], 1)
            np.testing.assert_array_equal(got[i].reshape(6, -1), ref.astype(np.float32))


def test_lld_frames_fall_back_to_the_temporary_folder_when_memory_has_no_room(monkeypatch):
    y = _speech(1.5, f0=200.0, seed=8)
    starts_s, frames = pooled.lld_frames(y, SR, feature_set="egemaps_lld_pooled")
    import collections
    import shutil
    import tempfile

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1, 1, 0))  # /dev/shm full
    dirs = []
    mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda suffix, prefix, dir: dirs.append(dir) or mkdtemp(suffix, prefix))
    again = pooled.lld_frames(y, SR, feature_set="egemaps_lld_pooled")
    assert dirs == [None]  # the default temporary folder
    np.testing.assert_array_equal(again[0], starts_s)
    np.testing.assert_array_equal(again[1], frames)
