"""Architectures, the window rule and the model bundle (save, load, predict, errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ser.models import quantize, registry, window
from ser.models.bundle import load_bundle, save_bundle, update_bundle_metrics
from ser.models.integrity import BundleIntegrityError, UnsealedBundleWarning, write_sealed_meta

SR, WINDOW_S = 8000, 0.5
FEATURES = {"n_mels": 24, "n_fft": 256, "hop_length": 80}
ARCH_PARAMS = {"channels": [4, 8], "dropout": 0.1}
LABELS = ["angry", "happy", "neutral", "sad"]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return registry.build_model("small_cnn", n_labels=len(LABELS), sample_rate=SR,
                              features=FEATURES, **ARCH_PARAMS).eval()


def _save(path, model=None, **overrides):
    kw = dict(labels=LABELS, sample_rate=SR, window_s=WINDOW_S,
              features=window.features_config(**FEATURES), arch="small_cnn",
              arch_params=ARCH_PARAMS, train_params={"epochs": 1},
              split={"train": ["s1"], "val": ["s2"], "test": ["s3"]}, metrics={"val": {"uar": 0.5}})
    kw.update(overrides)
    return save_bundle(path, model if model is not None else _model(), **kw)


def _windows(n: int, length: int = int(SR * WINDOW_S), seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, length))).astype(np.float32)


def test_small_cnn_maps_waveforms_to_logits_independent_of_gain():
    m = _model()
    x = torch.from_numpy(_windows(3))
    out = m(x)
    assert out.shape == (3, 4)
    torch.testing.assert_close(m(4.0 * x), out, atol=1e-4, rtol=1e-4)
    masked = m(x, spec_transform=lambda s: torch.zeros_like(s))
    assert not torch.allclose(masked, out)  # the spectrogram hook is applied


def test_build_model_rejects_unknown_arch_and_options():
    with pytest.raises(ValueError, match="unknown arch 'resnet9'; available: .*small_cnn"):
        registry.build_model("resnet9", n_labels=4, sample_rate=SR)
    with pytest.raises(ValueError, match="not accepted by arch 'small_cnn'"):
        registry.build_model("small_cnn", n_labels=4, sample_rate=SR, n_layers=3)
    with pytest.raises(ValueError, match="at least 2 labels"):
        registry.build_model("small_cnn", n_labels=1, sample_rate=SR)
    with pytest.raises(ValueError, match="unknown keys"):
        window.features_config(n_mfcc=13)
    assert sorted(registry.ARCHITECTURES) == ["crnn", "hf", "hf_image", "resnet", "small_cnn",
                                              "ssl_frozen"]  # an explicit dict


@pytest.mark.parametrize("length, expected", [
    (10, [4, 5, 6, 7]),   # longer: centre crop
    (4, [1, 2, 3, 4]),    # exact
    (2, [0, 1, 2, 0]),    # shorter: zero-padded on both sides, centred
    (1, [0, 1, 0, 0]),    # odd padding: the extra zero goes to the end
])
def test_fit_window_centre_rule(length, expected):
    out = window.fit_window(np.arange(1, length + 1, dtype=np.float32), 4)
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))
    assert out.dtype == np.float32


def test_fit_window_random_position_stays_inside():
    wave = np.arange(1, 11, dtype=np.float32)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        out = window.fit_window(wave, 4, rng=rng)
        assert np.array_equal(out, np.arange(out[0], out[0] + 4))
        starts.add(int(out[0]))
        short = window.fit_window(wave[:2], 4, rng=rng)
        assert sorted(short[short > 0].tolist()) == [1.0, 2.0] and len(short) == 4
    assert starts == set(range(1, 8))  # every start 0..6 reachable (values 1..7)
    with pytest.raises(ValueError, match="mono waveform"):
        window.fit_window(np.zeros((2, 10)), 4)


def test_window_samples():
    assert window.window_samples(2.0, 16000) == 32000
    assert window.window_samples(0.5, 8000) == 4000
    with pytest.raises(ValueError, match="window_s > 0"):
        window.window_samples(0.0, 16000)


def test_bundle_round_trip_gives_identical_probabilities(tmp_path):
    model = _model(seed=3)
    meta_path = _save(tmp_path / "b", model)
    meta = json.loads(meta_path.read_text())
    for key in ("labels", "sample_rate", "window_s", "features", "arch", "arch_params",
                "train_params", "split", "metrics", "git_commit", "created_utc"):
        assert key in meta
    assert meta["window_samples"] == 4000 and meta["features"]["normalization"] == "per_window_standardize"
    assert not list(tmp_path.glob("b/*.tmp"))  # atomic writes leave no temp files

    bundle = load_bundle(tmp_path / "b")
    assert (bundle.labels, bundle.sample_rate, bundle.window_s, bundle.window_samples) == \
        (LABELS, SR, WINDOW_S, 4000)
    x = _windows(5)
    proba = bundle.predict_proba(x, batch_size=2)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert proba.dtype == np.float32 and proba.shape == (5, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    again = load_bundle(tmp_path / "b").predict_proba(x)
    np.testing.assert_array_equal(again, bundle.predict_proba(x))
    assert bundle.predict_proba(np.zeros((0, 4000), np.float32)).shape == (0, 4)


def test_predict_proba_rejects_wrong_windows(tmp_path):
    _save(tmp_path / "b")
    bundle = load_bundle(tmp_path / "b")
    with pytest.raises(ValueError, match=r"^model was trained on 0\.5 s windows at 8000 Hz "
                                         r"\(4000 samples\); got 2000$"):
        bundle.predict_proba(_windows(2, length=2000))
    with pytest.raises(ValueError, match=r"2-D array \[n, 4000\].*windows\[None\]"):
        bundle.predict_proba(_windows(1)[0])
    with pytest.raises(ValueError, match="dtype int16"):
        bundle.predict_proba(np.zeros((1, 4000), np.int16))
    bad = _windows(1)
    bad[0, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bundle.predict_proba(bad)


def test_temperature_from_calibration_softens_probabilities(tmp_path):
    meta_path = _save(tmp_path / "b")
    plain = load_bundle(tmp_path / "b")
    meta = json.loads(meta_path.read_text())
    meta["calibration"] = {"temperature": 2.0}
    write_sealed_meta(meta_path.parent, meta)  # as stage 03 writes it
    warm = load_bundle(tmp_path / "b")
    x = _windows(3)
    expected = torch.softmax(torch.from_numpy(plain.predict_logits(x)) / 2.0, dim=1).numpy()
    np.testing.assert_allclose(warm.predict_proba(x), expected, atol=1e-6)


def test_load_bundle_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"no model bundle at .*nothing_here.*model\.json is missing"):
        load_bundle(tmp_path / "nothing_here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.model\.json is not valid JSON"):
        load_bundle(tmp_path / "broken")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"lacks required keys \['sample_rate'"):
        load_bundle(tmp_path / "partial")
    _save(tmp_path / "noweights")
    (tmp_path / "noweights" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="has model.json but no model.pt"):
        load_bundle(tmp_path / "noweights")


@pytest.mark.parametrize("change, message", [
    ({"format": 99}, r"newer.model\.json is a bundle of format 99, newer than this code reads"),
    ({"arch": "vision_transformer"}, r"newer.model\.json names an unknown model family or architecture "
                                     r"'vision_transformer'"),
])
def test_load_bundle_refuses_a_newer_format_or_unknown_family_naming_the_file(tmp_path, change, message):
    folder = tmp_path / "newer"
    _save(folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(ValueError, match=message):
        load_bundle(folder)


def test_weights_that_do_not_fit_the_arch_are_reported(tmp_path):
    meta_path = _save(tmp_path / "b")
    meta = json.loads(meta_path.read_text())
    meta["arch_params"] = {"channels": [4, 16], "dropout": 0.1}
    write_sealed_meta(meta_path.parent, meta)  # sealed: the weights themselves must be checked
    with pytest.raises(ValueError, match=r"model\.pt does not fit arch 'small_cnn'"):
        load_bundle(tmp_path / "b")


def test_update_bundle_metrics_keeps_other_splits(tmp_path):
    _save(tmp_path / "b")
    update_bundle_metrics(tmp_path / "b", split="test", metrics={"uar": 0.7, "macro_f1": 0.6})
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["metrics"] == {"val": {"uar": 0.5}, "test": {"uar": 0.7, "macro_f1": 0.6}}
    assert load_bundle(tmp_path / "b").meta["metrics"]["test"]["uar"] == 0.7


def test_resolve_device():
    assert registry.resolve_device("cpu").type == "cpu"
    assert registry.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            registry.resolve_device("cuda")


@pytest.mark.parametrize("hop", [80, 200, 37])  # 37: not a multiple of the frame hop -> per window
def test_predict_proba_starts_equals_predict_proba(tmp_path, hop):
    bundle = load_bundle(_save(tmp_path / "b").parent)
    y = _windows(1, length=SR * 3)[0]
    starts = np.arange(0, len(y) - bundle.window_samples + 1, hop)
    view = np.lib.stride_tricks.sliding_window_view(y, bundle.window_samples)
    ref = bundle.predict_proba(np.ascontiguousarray(view[starts]), batch_size=7)
    got = bundle.predict_proba_starts(y, starts, batch_size=7)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="window starts must lie in"):
        bundle.predict_proba_starts(y, [len(y) - 10])


def test_reduced_precisions_stay_close_to_fp32(tmp_path):
    folder = _save(tmp_path / "b").parent
    x = _windows(6)
    ref = load_bundle(folder).predict_proba(x)
    for precision in ("bf16", "int8"):
        b = load_bundle(folder, precision=precision)
        assert b.precision == precision
        p = b.predict_proba(x)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert np.abs(p - ref).max() < 0.05, precision
    int8 = load_bundle(folder, precision="int8")
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8"):
        load_bundle(folder, precision="half")


@pytest.mark.parametrize("arch, params", [("small_cnn", ARCH_PARAMS), ("resnet", {"channels": [4, 8]}),
                                          ("crnn", {"channels": [4, 8]})])
def test_fuse_conv_bn_keeps_outputs_and_removes_every_batch_norm(arch, params):
    torch.manual_seed(1)
    m = registry.build_model(arch, n_labels=len(LABELS), sample_rate=SR, features=FEATURES, **params)
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):  # trained-like stats
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.from_numpy(_windows(4))
    with torch.no_grad():
        ref = m.eval()(x)
        got = quantize.fuse_conv_bn(m)(x)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_loaded_bundle_is_prepared_for_inference_with_the_same_outputs(tmp_path):
    net = _model(seed=3)
    for bn in (x for x in net.modules() if isinstance(x, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
    folder = _save(tmp_path / "b", model=net).parent
    bundle = load_bundle(folder)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in bundle.model.modules())
    convs = [x for x in bundle.model.modules() if isinstance(x, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = _windows(5)
    with torch.no_grad():
        ref = torch.softmax(net.eval()(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(bundle.predict_proba(x), ref, rtol=0, atol=1e-5)


def test_a_bundle_edited_after_saving_is_refused_naming_the_file_and_keys(tmp_path):
    meta_path = _save(tmp_path / "b", window_s=2.0)
    assert load_bundle(meta_path).path == tmp_path / "b"  # MODEL given as its model.json
    update_bundle_metrics(tmp_path / "b", split="test", metrics={"uar": 0.7})  # legitimate update
    meta = json.loads(meta_path.read_text())
    assert meta["metrics"]["test"] == {"uar": 0.7}
    load_bundle(tmp_path / "b")
    meta["window_s"] = 5.0  # a hand edit: the model would run on the wrong window
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleIntegrityError, match=r"b.model\.json: the bundle was modified after "
                                                   r"it was saved \(model\.json keys window_s changed\)"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleIntegrityError, match="window_s"):  # an update never seals an edit
        update_bundle_metrics(tmp_path / "b", split="test", metrics={"uar": 0.8})
    meta["window_s"] = 2.0
    meta["metrics"] = {"edited": True}  # not a key that shapes outputs
    meta_path.write_text(json.dumps(meta))
    load_bundle(tmp_path / "b")
    (tmp_path / "b" / "model.pt").write_bytes((tmp_path / "b" / "model.pt").read_bytes() + b"\0")
    with pytest.raises(BundleIntegrityError, match=r"the weights \(model\.pt\) changed"):
        load_bundle(tmp_path / "b")


def test_a_bundle_saved_before_seals_still_loads_with_a_warning(tmp_path):
    meta_path = _save(tmp_path / "old")
    meta = json.loads(meta_path.read_text())
    del meta["integrity"]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UnsealedBundleWarning, match="written before bundles stored a fingerprint"):
        bundle = load_bundle(tmp_path / "old")
    assert bundle.labels == LABELS
    update_bundle_metrics(tmp_path / "old", split="test", metrics={"uar": 0.6})  # seals it
    assert "integrity" in json.loads(meta_path.read_text())
    load_bundle(tmp_path / "old")  # no warning now (warnings are errors in the tests)
