"""Log-mel features against librosa, normalisation, SpecAugment and waveform augmentation."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from ser.signal.spectrogram import (
    LogMel,
    add_noise,
    freq_warp,
    log_mel,
    mel_bands,
    mel_filterbank,
    normalize_window,
    random_time_shift,
    spec_augment,
)


def _signal(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    chirp = np.sin(2 * np.pi * (100 + 1500 * t) * t)
    return (0.3 * chirp + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("sr, n_fft, hop, n_mels, fmin, fmax, top_db", [
    (16000, 512, 160, 64, 50.0, None, 80.0),
    (16000, 400, 160, 40, 0.0, 7000.0, None),
    (8000, 256, 80, 32, 50.0, None, 80.0),
])
def test_log_mel_matches_librosa(sr, n_fft, hop, n_mels, fmin, fmax, top_db):
    y = _signal(sr, 1.3)
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                                       fmin=fmin, fmax=fmax), ref=1.0, top_db=top_db)
    got = log_mel(torch.from_numpy(y)[None], sample_rate=sr, n_mels=n_mels, n_fft=n_fft,
                  hop_length=hop, fmin=fmin, fmax=fmax, top_db=top_db)[0].numpy()
    assert got.shape == ref.shape == (n_mels, 1 + len(y) // hop)
    np.testing.assert_allclose(got, ref, atol=1e-2)


def test_batch_equals_single_examples_and_top_db_is_per_example():
    loud = np.concatenate([_signal(16000, 0.5, seed=2), np.zeros(8000, np.float32)])  # half silent
    quiet = 0.001 * _signal(16000, 1.0, seed=1)
    batch = log_mel(torch.from_numpy(np.stack([loud, quiet])), sample_rate=16000)
    for i, y in enumerate((loud, quiet)):
        single = log_mel(torch.from_numpy(y)[None], sample_rate=16000)[0]
        torch.testing.assert_close(batch[i], single)
    # each example is clipped to its own peak - 80 dB, not to the batch's
    assert (batch[0].max() - batch[0].min()).item() == pytest.approx(80.0, abs=1e-3)
    assert batch[1].min() < batch[0].min() - 20


def test_logmel_module_filterbank_is_a_non_persistent_buffer():
    m = LogMel(sample_rate=16000)
    assert "filterbank" not in m.state_dict()
    assert m.filterbank.shape == (64, 257)
    assert m.n_frames(32000) == m(torch.zeros(1, 32000)).shape[-1] == 201
    assert m.config()["n_fft"] == 512


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="Nyquist"):
        mel_filterbank(sample_rate=8000, n_fft=256, n_mels=32, fmax=6000)
    with pytest.raises(ValueError, match="fmin < fmax"):
        mel_filterbank(sample_rate=8000, n_fft=256, n_mels=32, fmin=3000, fmax=2000)
    with pytest.raises(ValueError, match=r"expected waveforms \[B, T\]"):
        log_mel(torch.zeros(2, 3, 100), sample_rate=8000, n_fft=64, hop_length=16, n_mels=8)


def test_normalize_window_is_standardised_and_gain_invariant():
    y = torch.from_numpy(np.stack([_signal(16000, 1.0), _signal(16000, 1.0, seed=3)]))
    spec = normalize_window(log_mel(y, sample_rate=16000))
    torch.testing.assert_close(spec.mean(dim=(1, 2)), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(spec.std(dim=(1, 2), unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    louder = normalize_window(log_mel(3.0 * y, sample_rate=16000))
    torch.testing.assert_close(louder, spec, atol=1e-3, rtol=0)
    assert torch.equal(normalize_window(log_mel(torch.zeros(1, 8000), sample_rate=16000)),
                       torch.zeros(1, 64, 51))


def test_spec_augment_masks_bands_and_blocks_reproducibly():
    spec = torch.randn(4, 32, 100) + 10.0  # no natural zeros
    out = spec_augment(spec, freq_masks=1, time_masks=1, max_freq=5, max_time=10,
                       generator=torch.Generator().manual_seed(0))
    again = spec_augment(spec, freq_masks=1, time_masks=1, max_freq=5, max_time=10,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(spec, out) and spec.min() > 0  # input untouched
    masked = out == 0
    for b in range(4):
        rows = masked[b].all(dim=1).sum().item()   # fully masked mel bins
        cols = masked[b].all(dim=0).sum().item()   # fully masked frames
        assert rows <= 5 and cols <= 10
        # every masked cell lies in a masked row or a masked column
        full = masked[b].all(dim=1)[:, None] | masked[b].all(dim=0)[None, :]
        assert torch.equal(masked[b], full)
    assert masked.any()
    assert torch.equal(spec_augment(spec, freq_masks=0, time_masks=0), spec)
    with pytest.raises(ValueError, match="expected"):
        spec_augment(spec[0])


def test_add_noise_reaches_the_requested_snr():
    x = torch.from_numpy(np.stack([_signal(16000, 2.0), _signal(16000, 2.0, seed=5)]))
    g = torch.Generator().manual_seed(0)
    noisy = add_noise(x, snr_db=torch.tensor([10.0, 20.0]), generator=g)
    noise = noisy - x
    snr = 10 * torch.log10(x.square().mean(1) / noise.square().mean(1))
    torch.testing.assert_close(snr, torch.tensor([10.0, 20.0]), atol=0.2, rtol=0)
    assert torch.equal(add_noise(x, snr_db=float("inf")), x)
    silent = torch.zeros(1, 100)
    assert torch.equal(add_noise(silent, snr_db=10.0), silent)


def test_random_time_shift_is_a_circular_shift():
    x = torch.arange(20, dtype=torch.float32).repeat(3, 1)
    out = random_time_shift(x, max_shift=5, generator=torch.Generator().manual_seed(1))
    for row_in, row_out in zip(x, out):
        shift = int((row_out == 0).nonzero()[0])
        shift = shift if shift <= 5 else shift - 20
        assert abs(shift) <= 5
        assert torch.equal(torch.roll(row_in, shift), row_out)
    assert torch.equal(random_time_shift(x, max_shift=0), x)


def test_mel_bands_cover_every_non_zero_weight():
    fb = torch.from_numpy(mel_filterbank(sample_rate=16000, n_fft=512, n_mels=64, fmin=50.0))
    bands = mel_bands(fb, group=16)
    assert len(bands) == 4
    rebuilt = torch.zeros_like(fb)
    row = 0
    for lo, hi, w in bands:
        assert w.shape == (2 * (hi - lo), 16)
        rebuilt[row:row + 16, lo:hi] = w[0::2].t()
        torch.testing.assert_close(w[0::2], w[1::2])  # real and imaginary rows share weights
        row += 16
    torch.testing.assert_close(rebuilt, fb, atol=0, rtol=0)
    assert sum((hi - lo) * 16 for lo, hi, _ in bands) < 0.3 * fb.numel()  # the point of grouping


def test_freq_warp_moves_energy_up_or_down_and_keeps_shape():
    spec = torch.zeros(64, 40, 5)
    spec[:, 10] = 1.0  # a line at mel bin 10
    out = freq_warp(spec, max_warp=0.3, generator=torch.Generator().manual_seed(0))
    assert out.shape == spec.shape and torch.equal(spec[:, 10], torch.ones(64, 5))  # input untouched
    peaks = out[:, :, 0].argmax(dim=1)
    assert peaks.min() >= 7 and peaks.max() <= 14 and len(set(peaks.tolist())) > 3
    torch.testing.assert_close(out.sum(dim=1), out.sum(dim=1)[:, :1].expand(-1, 5))  # same per frame
    assert torch.equal(freq_warp(spec, max_warp=0.0), spec)
    with pytest.raises(ValueError, match=r"max_warp must be in \[0, 1\)"):
        freq_warp(spec, max_warp=1.0)


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (16000, 512, 64, 50.0, None), (16000, 400, 40, 0.0, 8000.0), (22050, 1024, 128, 20.0, None),
    (8000, 256, 26, 300.0, 3000.0), (48000, 2048, 80, 0.0, 12000.0),
])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                              fmax=sr / 2 if fmax is None else fmax)
    got = mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


def test_loading_a_log_mel_model_does_not_import_librosa():
    """librosa (with scipy.signal) costs ~0.8 s of start-up for every ``ser predict``."""
    import subprocess
    import sys

    code = ("import sys; from ser.signal.spectrogram import LogMel; LogMel(sample_rate=16000); "
            "print('librosa' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("n_fft, hop, window_n, top_db", [
    (512, 160, 32000, 80.0),   # the default front end, 2 s windows
    (400, 160, 16000, None),
    (511, 100, 5000, 80.0),    # odd FFT size
    (256, 80, 400, 80.0),      # short window: few interior frames
    (1024, 256, 1024, 60.0),   # one interior frame
])
def test_windows_share_frames_and_equal_the_per_window_spectrogram(n_fft, hop, window_n, top_db):
    m = LogMel(sample_rate=16000, n_fft=n_fft, hop_length=hop, top_db=top_db)
    y = torch.from_numpy(_signal(16000, 3.0, seed=3))
    y[5000:9000] = 0.0  # a silent stretch: the per-window top_db clip must still be per window
    starts = torch.arange(0, len(y) - window_n + 1, hop * 3)
    got = m.windows(y, starts, window_n=window_n)
    ref = m(torch.stack([y[s:s + window_n] for s in starts.tolist()]))
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
    assert m.can_share_frames(window_n=window_n, hop_n=hop * 3)


def test_windows_reject_bad_starts_and_short_windows():
    m = LogMel(sample_rate=16000)
    y = torch.zeros(40000)
    with pytest.raises(ValueError, match="multiples of hop_length=160"):
        m.windows(y, torch.tensor([0, 100]), window_n=32000)
    with pytest.raises(ValueError, match="inside the 40000-sample signal"):
        m.windows(y, torch.tensor([0, 16000]), window_n=32000)
    with pytest.raises(ValueError, match="too short"):
        m.windows(y, torch.tensor([0]), window_n=300)
    assert not m.can_share_frames(window_n=32000, hop_n=100)
    assert not m.can_share_frames(window_n=300, hop_n=160)
