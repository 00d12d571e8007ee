"""Temperature scaling, ECE and reliability on synthetic logits; calibration stored in a bundle."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from ser.models import registry, window
from ser.models.bundle import Bundle, bundle_fingerprint, load_bundle, save_bundle  # noqa: E402
from ser.train import calibration


def _calibrated_sample(seed: int, n: int = 4000, k: int = 4, scale: float = 1.5):
    """Logits ``z`` whose softmax is the true class distribution, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    p = calibration.softmax_t(z)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return z, y


def test_overconfident_logits_get_t_above_one_and_lower_ece():
    z, y = _calibrated_sample(0)
    over = 3.0 * z  # the model is 3x too sharp
    t = calibration.fit_temperature(over, y)
    assert t > 1
    before = calibration.expected_calibration_error(calibration.softmax_t(over), y)
    after = calibration.expected_calibration_error(calibration.softmax_t(over, t), y)
    assert before > 0.1 and after < 0.03 and after < before / 3
    assert calibration.nll(over, y, temperature=t) < calibration.nll(over, y)


@pytest.mark.parametrize("t_true", [0.5, 2.0, 4.0])
def test_fit_recovers_a_known_temperature(t_true):
    z, y = _calibrated_sample(int(t_true * 10))
    t = calibration.fit_temperature(z * t_true, y)
    assert t == pytest.approx(t_true, rel=0.10)


def test_sample_weights_act_as_repeated_rows():
    z, y = _calibrated_sample(3, n=400)
    a, b = z[:100] * 3.0, z[100:] * 0.7  # a too sharp, b too flat
    za, ya = np.vstack([a, b]), np.concatenate([y[:100], y[100:]])
    w = np.r_[np.full(100, 3.0), np.ones(300)]
    repeated = calibration.fit_temperature(np.vstack([a, a, a, b]), np.concatenate([y[:100]] * 3 + [y[100:]]))
    assert calibration.fit_temperature(za, ya, sample_weight=w) == pytest.approx(repeated, rel=1e-3)
    assert calibration.fit_temperature(za, ya, sample_weight=w) > calibration.fit_temperature(za, ya)
    with pytest.raises(ValueError, match="sample_weight"):
        calibration.fit_temperature(za, ya, sample_weight=-w)


def test_fit_respects_bounds():
    z, y = _calibrated_sample(1, n=500)
    # labels independent of the logits: the best temperature is as flat as allowed
    y = np.random.default_rng(9).integers(0, 4, len(y))
    assert calibration.fit_temperature(z, y, bounds=(0.5, 3.0)) == pytest.approx(3.0, rel=1e-3)


def test_ece_by_hand_and_against_a_loop():
    probs = np.tile([0.9, 0.05, 0.05], (10, 1))
    y = np.array([0] * 5 + [1] * 5)
    assert calibration.expected_calibration_error(probs, y) == pytest.approx(0.4)  # |0.5 - 0.9|
    # two filled bins: conf 0.6 (acc 1/2) and 0.95 (acc 1) -> (2 * 0.1 + 2 * 0.05) / 4
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.05, 0.95]])
    y = np.array([0, 1, 0, 1])
    assert calibration.expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.075)
    rng = np.random.default_rng(3)
    probs = calibration.softmax_t(rng.normal(size=(300, 5)) * 2)
    y = rng.integers(0, 5, 300)
    conf, correct = probs.max(1), probs.argmax(1) == y
    ece = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert calibration.expected_calibration_error(probs, y, n_bins=15) == pytest.approx(ece)
    table = calibration.reliability_table(probs, y, n_bins=15)
    assert table["n"].sum() == 300 and len(table) == 15


def test_bad_inputs_are_named():
    z, y = _calibrated_sample(2, n=20)
    with pytest.raises(ValueError, match="integer class indices"):
        calibration.fit_temperature(z, y.astype(float))
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        calibration.fit_temperature(z, np.where(y == 0, 7, y))
    with pytest.raises(ValueError, match=r"expected shape \(20,\)"):
        calibration.fit_temperature(z, y[:5])
    with pytest.raises(ValueError, match="NaN or inf"):
        calibration.fit_temperature(np.where(z > 1, np.nan, z), y)
    with pytest.raises(ValueError, match="0 < T_min < T_max"):
        calibration.fit_temperature(z, y, bounds=(0.0, 5.0))
    with pytest.raises(ValueError, match="pass probabilities, not logits"):
        calibration.expected_calibration_error(z, y)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        calibration.expected_calibration_error(calibration.softmax_t(z), y, n_bins=0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        calibration.softmax_t(z, 0.0)


def test_reliability_diagram_draws_before_and_after():
    z, y = _calibrated_sample(4, n=1000)
    t = calibration.fit_temperature(3 * z, y)
    ax = calibration.reliability_diagram(
        {"before": calibration.softmax_t(3 * z), "after": calibration.softmax_t(3 * z, t)}, y,
        n_bins=10, title="test")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == "perfect calibration" and texts[1].startswith("before (ECE 0.")
    assert texts[2].startswith("after (ECE 0.")
    ece_after = float(texts[2].split("ECE ")[1].rstrip(")"))
    assert ece_after < float(texts[1].split("ECE ")[1].rstrip(")"))
    assert len(ax.lines) == 3 and ax.get_title() == "test"
    plt.close("all")


# --------------------------------------------------------------------- bundles

LABELS = ["a", "b", "c"]
SR = 8000


def _tiny_bundle(tmp_path):
    torch.manual_seed(0)
    model = registry.build_model("small_cnn", n_labels=3, sample_rate=SR, channels=[4], freq_bins=1)
    out = tmp_path / "bundle"
    save_bundle(out, model, labels=LABELS, sample_rate=SR, window_s=0.25,
                       features=window.features_config(n_mels=16, n_fft=256, hop_length=80),
                       arch="small_cnn", arch_params={"channels": [4], "freq_bins": 1},
                       train_params={}, split={"train": ["s1"], "val": ["s2"], "test": ["s3"]},
                       metrics={"val": {"uar": 0.5}})
    return out


def test_store_calibration_is_applied_by_predict_proba(tmp_path):
    out = _tiny_bundle(tmp_path)
    windows = np.random.default_rng(0).normal(size=(6, 2000)).astype(np.float32) * 0.1
    raw = load_bundle(out)
    assert raw.temperature == 1.0
    logits = raw.predict_logits(windows)
    calibration.store_calibration(out, temperature=2.5, ece_before=0.2, ece_after=0.05,
                                  extra={"n_fit": 40})
    meta = json.loads((out / "model.json").read_text())
    assert meta["calibration"]["temperature"] == 2.5 and meta["calibration"]["fitted_on"] == "val"
    assert meta["calibration"]["n_fit"] == 40 and meta["metrics"] == {"val": {"uar": 0.5}}
    assert meta["labels"] == LABELS  # the rest of model.json is kept
    cal = load_bundle(out)
    assert cal.temperature == 2.5
    np.testing.assert_allclose(cal.predict_proba(windows), calibration.softmax_t(logits, 2.5), atol=1e-5)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        calibration.store_calibration(out, temperature=-1.0, ece_before=0.1, ece_after=0.1)
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        calibration.store_calibration(tmp_path / "nothing", temperature=1.0, ece_before=0, ece_after=0)


def test_recalibrating_alike_keeps_the_fingerprint(tmp_path, monkeypatch):
    """A rerun of stage 03 that fits the same temperature must let stage 04 resume."""
    out = _tiny_bundle(tmp_path)
    calibration.store_calibration(out, temperature=2.5, ece_before=0.2, ece_after=0.05)
    first = bundle_fingerprint(out)
    meta = json.loads((out / "model.json").read_text())
    meta["calibration"]["created_utc"] = "2000-01-01T00:00:00+00:00"  # fitted at another time
    (out / "model.json").write_text(json.dumps(meta))
    assert bundle_fingerprint(out) == first
    calibration.store_calibration(out, temperature=2.0, ece_before=0.2, ece_after=0.05)
    assert bundle_fingerprint(out) != first


class _FixedLogits(torch.nn.Module):
    """Logits = [rms, 0, -rms] * 10: the loudest windows are confidently class 'a'."""

    def forward(self, wave, *, spec_transform=None):
        rms = wave.square().mean(dim=1).sqrt()
        return torch.stack([rms, torch.zeros_like(rms), -rms], dim=1) * 10


def test_utterance_logits_reads_centre_windows(tmp_path):
    bundle = Bundle(path=tmp_path, meta={"labels": LABELS, "sample_rate": SR, "window_s": 0.25},
                    model=_FixedLogits())
    rows = []
    for i, (amp, lab, split) in enumerate([(0.5, "a", "val"), (0.1, "c", "val"), (0.5, "b", "test"),
                                           (0.3, "x", "val")]):
        p = tmp_path / f"u{i}.wav"
        sf.write(p, np.full(SR, amp), SR, subtype="FLOAT")
        rows.append({"path": str(p), "speaker": f"s{i}", "label": lab, "split": split})
    (tmp_path / "broken.wav").write_bytes(b"no")
    rows.append({"path": str(tmp_path / "broken.wav"), "speaker": "s9", "label": "a", "split": "val"})
    table = pd.DataFrame(rows)
    logits, y, used = calibration.utterance_logits(bundle, table, split="val", progress=False)
    assert logits.shape == (2, 3) and y.tolist() == [0, 2]  # foreign label "x" skipped
    np.testing.assert_allclose(logits[:, 0], [5.0, 1.0], rtol=1e-4)
    assert used["speaker"].tolist() == ["s0", "s1"] and used.attrs["n_failed"] == 1
    with pytest.raises(ValueError, match="no readable utterance with split == 'dev'"):
        calibration.utterance_logits(bundle, table, split="dev", progress=False)
