"""Pooled low-level-descriptor features: openSMILE LLDs computed once over a stretch of
audio and summarised per window, the classical feature sets that long recordings afford.

openSMILE's own functionals (``compare``, ``egemaps`` in
:mod:`ser.models.classical.features`) run the whole LLD extraction on every window, so
with a 50 % hop each second of a recording is analysed twice and the functionals cost
about 70 ms per 2-s window. The pooled sets instead take the LLD frames (10 ms apart)
of a block of audio once (:func:`lld_frames`) and summarise the frames of each window
(:func:`pool_frames`), and training computes them on each utterance with the very same
two functions (one "window" spanning the utterance, :func:`pooled_signal`), so a
model trained on them sees at inference the features it was trained on.

Sets (:data:`POOLED_SETS`):

- ``compare_lld_pooled``: the 65 ComParE_2016 LLDs and their absolute deltas (130 descriptors);
- ``egemaps_lld_pooled``: the 25 eGeMAPSv02 LLDs and their absolute deltas (50 descriptors);

each pooled by :data:`STATISTICS` (mean, standard deviation, 10th/50th/90th
percentiles), so 650 and 250 values. Deltas are openSMILE's regression deltas over
:data:`DELTA_WIDTH` frames each side, computed here from the LLDs (asking openSMILE for
its delta level would run the whole extraction a second time); their magnitude is
pooled (how fast a descriptor changes), because the mean of a signed delta over a window
is only its end minus its start. Descriptors that are 0
where there is no voice (F0, jitter, shimmer, HNR and openSMILE's ``nz`` columns) count
only voiced frames; a window with none gets NaN (the estimators impute it).

Extraction. :func:`lld_frames` runs openSMILE through its C API (opensmile-python's
``OpenSMILE``) on the set's own LLD components, with the functionals of the set's config
left out (:func:`_lld_config`) and the ``lld`` level written by openSMILE's own sinks to a
temporary file in memory (raw float32 frames and one column of frame times), instead of
``opensmile.Smile``, which computes the functionals over the whole input too and calls
back into Python once per 10-ms frame. The values and frame times are exactly those of
``opensmile.Smile(feature_set, LowLevelDescriptors).process_signal`` (tested), so bundles
trained before predict the same; it takes about a quarter less CPU.

Frames and windows. Frame ``i`` of a signal starts at ``i * 10 ms``; a window
``[s, s + W)`` pools the frames that start inside it. Pooled features of a window from a
block's LLDs differ from those of the window cut out alone only through the frames'
context (the LLDs' own smoothing, ComParE's RASTA filter, eGeMAPS' pitch tracking, the
deltas near the edges); :func:`pooled_signal` of an utterance equals
:func:`block_pooled` of one window spanning it, bit for bit.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Pooled feature set → openSMILE feature set whose LLDs it pools.
POOLED_SETS: Mapping[str, str] = {"compare_lld_pooled": "ComParE_2016",
                                  "egemaps_lld_pooled": "eGeMAPSv02"}
#: Statistics of each descriptor over a window's frames, in column order.
STATISTICS: tuple[str, ...] = ("mean", "std", "p10", "p50", "p90")
#: Frame step of the openSMILE LLDs (s).
FRAME_STEP_S: float = 0.01
#: Frames on each side of the delta regression (openSMILE's default).
DELTA_WIDTH: int = 2
#: Substrings of descriptor names that are 0 in unvoiced frames (pooled over voiced frames only).
VOICED_ONLY: tuple[str, ...] = ("F0final", "jitter", "shimmer", "logHNR", "nz")

_SMILES: dict[str, Any] = {}
_LLD_CONFIGS: dict[str, str] = {}

#: openSMILE sink components that replace opensmile-python's per-frame Python callback: the
#: LLD level dumped as raw float32 (``cDatadumpSink``) and each frame's time written by a CSV
#: sink on a one-element selection of that level (the frame times are openSMILE's own,
#: quirks included: ComParE's last frame repeats the time of the one before).
_SINK_CONF = """[componentInstances:cComponentManager]
instance[ser_llddump].type=cDatadumpSink
instance[ser_lldsel].type=cDataSelector
instance[ser_lldtime].type=cCsvSink

[ser_llddump:cDatadumpSink]
reader.dmLevel = lld
filename = {values}

[ser_lldsel:cDataSelector]
reader.dmLevel = lld
writer.dmLevel = ser_lldtime
selected = {first}

[ser_lldtime:cCsvSink]
reader.dmLevel = ser_lldtime
filename = {times}
delimChar = ;
printHeader = 0
frameIndex = 0
frameTime = 1
"""


def is_pooled(feature_set: str) -> bool:
    """Whether ``feature_set`` is one of :data:`POOLED_SETS`."""
    return feature_set in POOLED_SETS


def _smile(feature_set: str) -> Any:
    """The openSMILE LLD extractor of a pooled set (one per process)."""
    if feature_set not in _SMILES:
        import opensmile  # lazily: only the openSMILE sets need it

        fs = getattr(opensmile.FeatureSet, POOLED_SETS[feature_set])
        _SMILES[feature_set] = opensmile.Smile(feature_set=fs,
                                               feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    return _SMILES[feature_set]


def descriptor_names(feature_set: str) -> list[str]:
    """The LLD names of a pooled set followed by their absolute deltas (``<name>_absde``)."""
    names = list(_smile(feature_set).feature_names)
    return names + [f"{n}_absde" for n in names]


def feature_names(feature_set: str) -> list[str]:
    """Column names of a pooled set: ``<descriptor>__<statistic>`` per descriptor and
    :data:`STATISTICS`."""
    return [f"{d}__{s}" for d in descriptor_names(feature_set) for s in STATISTICS]


def deltas(x: np.ndarray, *, width: int = DELTA_WIDTH) -> np.ndarray:
    """Regression deltas of frames ``x [F, D]`` over ``width`` frames each side (edges
    repeat the first/last frame): ``sum_k k (x[t+k] - x[t-k]) / (2 sum_k k^2)``."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return x.copy()
    pad = np.concatenate([np.repeat(x[:1], width, 0), x, np.repeat(x[-1:], width, 0)])
    n = len(x)
    out = np.zeros_like(x)
    for k in range(1, width + 1):
        out += k * (pad[width + k:width + k + n] - pad[width - k:width - k + n])
    return out / (2.0 * sum(k * k for k in range(1, width + 1)))


def lld_frames(y: np.ndarray, sample_rate: int, *, feature_set: str) -> tuple[np.ndarray, np.ndarray]:
    """The descriptor frames of a signal: openSMILE LLDs and their absolute :func:`deltas`.

    Args:
        y: mono signal ``[T]`` at ``sample_rate``.
        sample_rate: Hz.
        feature_set: one of :data:`POOLED_SETS`.

    Returns:
        ``(starts_s, frames)``: each frame's start (s from ``y[0]``), float64 ``[F]``, and
        float64 ``[F, D]`` (:func:`descriptor_names`), with NaN where a voiced-only
        descriptor (:data:`VOICED_ONLY`) has no voice.

    Raises:
        ValueError: unknown set or a signal that is not 1-D.
    """
    if not is_pooled(feature_set):
        raise ValueError(f"feature_set={feature_set!r} is not a pooled set; use one of {', '.join(POOLED_SETS)}")
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono signal [T]; got shape {y.shape}")
    smile = _smile(feature_set)
    d = len(smile.feature_names)
    if y.size == 0:
        return np.zeros(0), np.zeros((0, 2 * d))
    times, lld32 = _opensmile_lld(y, sample_rate, feature_set=feature_set)
    lld = lld32.astype(np.float64)
    if len(lld) == 0:  # shorter than one frame: one NaN frame at 0, as opensmile.Smile gives
        warnings.warn(f"a signal of {y.size} samples is shorter than one {feature_set} LLD frame; "
                      "its descriptors are NaN", UserWarning, stacklevel=2)
        times, lld = np.zeros(1), np.full((1, d), np.nan)
    # the clock of opensmile.Smile: its times go through pandas timedeltas (ns), first one 0
    starts = pd.to_timedelta(times, "s").total_seconds().to_numpy(dtype=np.float64, copy=True)
    starts[0] = 0.0
    frames = np.concatenate([lld, np.abs(deltas(lld))], axis=1)
    voiced_only = np.array([any(k in n for k in VOICED_ONLY) for n in smile.feature_names] * 2)
    # a voiced-only descriptor (and its delta) counts where the descriptor itself is voiced
    unvoiced = np.tile(lld == 0, 2) & voiced_only
    frames[unvoiced] = np.nan
    return starts, frames


def _lld_config(feature_set: str) -> str:
    """The openSMILE config of a pooled set's LLDs alone: the set's own config file with its
    functionals (and, in ComParE, the delta concatenation) left out, so that one pass does not
    also compute functionals over the whole input; the components up to the ``lld`` level
    are the set's own, so are the LLDs. Relative includes become absolute."""
    path = _smile(feature_set).config_path
    folder = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    concat = re.finditer(r"^\[(\w+):cVectorConcat\]\s*\n(?:.*\n)*?writer\.dmLevel\s*=\s*(\w+)", text, re.M)
    writes = {m.group(1): m.group(2) for m in concat}
    drop = {name for name, level in writes.items() if level != "lld"}
    if "lld" not in writes.values() or "func" not in writes.values():
        raise RuntimeError(f"unexpected openSMILE config {path}: expected concatenations into its "
                           f"'lld' and 'func' levels, found {writes}")
    out, skip = [], False
    for line in text.splitlines():
        s = line.strip()
        include = re.fullmatch(r"\\\{([^\\].*)\}", s)
        if include:
            skip = False
            if include.group(1).endswith("func.conf.inc"):
                continue
            line = "\\{" + os.path.normpath(os.path.join(folder, include.group(1))) + "}"
        elif s.startswith("\\{"):
            skip = False
        elif (m := re.match(r"instance\[(\w+)\]", s)) and m.group(1) in drop:
            continue
        elif m := re.match(r"\[(\w+):", s):
            skip = m.group(1) in drop
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n"


def _opensmile_lld(y: np.ndarray, sample_rate: int, *, feature_set: str) -> tuple[np.ndarray, np.ndarray]:
    """openSMILE's LLD frames of ``y`` (float32 ``[T]``, non-empty) in one batch: the set's own
    config and input chain (16-bit PCM, as opensmile-python feeds it) with the sinks of
    :data:`_SINK_CONF` in a temporary folder (in memory where ``/dev/shm`` has room).

    Returns:
        ``(times_s, lld)``: each frame's time as openSMILE reports it, float64 ``[F]``, and
        the LLDs, float32 ``[F, D]`` (the very values opensmile.Smile returns).
    """
    import opensmile
    from opensmile.core.lib import OpenSMILE  # lazily: only the openSMILE sets need it

    smile = _smile(feature_set)
    names = list(smile.feature_names)
    root = smile.default_config_root
    pcm = y.copy()
    pcm *= 32768  # as opensmile.Smile: scale, then truncate to int16
    pcm = pcm.astype(np.int16)
    # the dump (float32 frames, 100 per second) and the times, with room to spare
    need = 2 * (len(y) / sample_rate / FRAME_STEP_S + 10) * (4 * len(names) + 32)
    shm = Path("/dev/shm")
    in_memory = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > need
    with tempfile.TemporaryDirectory(prefix="ser-lld-", dir=shm if in_memory else None) as tmp:
        values, times, conf, main = (os.path.join(tmp, n) for n in ("lld.f32", "times.csv", "sink.conf.inc",
                                                                     "lld.conf"))
        Path(conf).write_text(_SINK_CONF.format(values=values, times=times, first=names[0]))
        if feature_set not in _LLD_CONFIGS:
            _LLD_CONFIGS[feature_set] = _lld_config(feature_set)
        Path(main).write_text(_LLD_CONFIGS[feature_set])
        options = {"source": os.path.join(root, opensmile.config.EXTERNAL_INPUT_CONFIG),
                   "sampleRate": sample_rate, "nBits": 16, "sink": conf,
                   "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
                   "frameModeFunctionalsConf": os.path.join(root, "shared/FrameModeFunctionals.conf.inc")}
        engine = OpenSMILE()
        engine.initialize(config_file=main, options=options, loglevel=smile.loglevel)
        try:
            engine.external_audio_source_write_data(opensmile.config.EXTERNAL_SOURCE_COMPONENT, pcm.tobytes())
            engine.external_audio_source_set_eoi(opensmile.config.EXTERNAL_SOURCE_COMPONENT)
            engine.run()
        finally:
            engine.free()
        raw = np.fromfile(values, dtype=np.float32)
        with open(times, "rb") as f:
            text = f.read()
    # cDatadumpSink: a header of two floats (descriptors, frames), then the frames
    if raw.size < 2 or int(raw[0]) != len(names) or raw.size - 2 != int(raw[1]) * len(names):
        raise RuntimeError(f"openSMILE wrote an unexpected LLD dump for {feature_set}: {raw.size} values, "
                           f"expected 2 + frames x {len(names)}")
    lld = raw[2:].reshape(-1, len(names))
    # "<time>;<value>" per frame (a C library's locale could print a decimal comma)
    t = np.array([float(line.split(b";", 1)[0].replace(b",", b".")) for line in text.splitlines() if line.strip()],
                 dtype=np.float64)
    if len(t) != len(lld):
        raise RuntimeError(f"openSMILE wrote {len(t)} frame times for {len(lld)} {feature_set} LLD frames")
    return t, lld


def pool_frames(frames: np.ndarray, frame_starts_s: np.ndarray, starts_s: np.ndarray,
                window_s: float) -> np.ndarray:
    """:data:`STATISTICS` of the frames of each window ``[s, s + window_s)``.

    Args:
        frames: float64 ``[F, D]`` (NaN = no value in that frame).
        frame_starts_s: frame starts (s), increasing, ``[F]``.
        starts_s: window starts (s), on the frames' clock, ``[N]``.
        window_s: window length (s).

    Returns:
        float32 ``[N, D * len(STATISTICS)]``, per descriptor its statistics in
        :data:`STATISTICS` order (the order of :func:`feature_names`); NaN where a window
        has no value of a descriptor.
    """
    frames = np.asarray(frames, dtype=np.float64)
    starts = np.asarray(starts_s, dtype=np.float64)
    n_stats = len(STATISTICS)
    out = np.full((len(starts), frames.shape[1] * n_stats), np.nan, dtype=np.float32)
    # a tolerance of a microsecond keeps float clocks from moving a frame across an edge
    i0 = np.searchsorted(frame_starts_s, starts - 1e-6, side="left")
    i1 = np.searchsorted(frame_starts_s, starts + window_s - 1e-6, side="left")
    lengths = i1 - i0
    for k in np.unique(lengths):
        if k <= 0:
            continue
        rows = np.flatnonzero(lengths == k)
        x = frames[i0[rows][:, None] + np.arange(k)[None, :]]  # [n, k, D]
        out[rows] = _statistics(x).reshape(len(rows), -1)
    return out


def _statistics(x: np.ndarray) -> np.ndarray:
    """``[n, D, len(STATISTICS)]`` of frames ``x [n, k, D]`` (NaN ignored); ``x`` is overwritten.

    Percentiles interpolate linearly between order statistics (as ``np.percentile``); the
    order statistics come from a partial sort for descriptors with a value in every frame
    and a full sort (NaN last) otherwise, each along a contiguous copy of the frames
    (``[n, D, k]``); both give the same values, so a window's statistics do not depend on
    the other windows pooled with it. Means and variances sum along the frames axis of
    ``x`` in frame order.
    """
    n, k, d = x.shape
    valid = np.isfinite(x)
    count = valid.sum(axis=1)
    quantiles = (0.10, 0.50, 0.90)
    pct = np.full((len(quantiles), n, d), np.nan)
    full = count.min(axis=0) == k  # descriptors with a value in every frame of every window
    if full.any():
        pos = [q * (k - 1) for q in quantiles]
        kth = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, k - 1) for p in pos})
        part = np.ascontiguousarray(x[:, :, full].transpose(0, 2, 1))  # [n, D_full, k]
        part.partition(kth, axis=-1)
        for j, p in enumerate(pos):
            lo = int(np.floor(p))
            a, b = part[:, :, lo], part[:, :, min(lo + 1, k - 1)]
            pct[j][:, full] = a + (b - a) * (p - lo)
    if (~full).any():
        xs = np.ascontiguousarray(np.where(valid[:, :, ~full], x[:, :, ~full], np.inf).transpose(0, 2, 1))
        xs.sort(axis=-1)
        c = count[:, ~full]
        for j, q in enumerate(quantiles):
            p = q * np.maximum(c - 1, 0)
            lo = np.floor(p).astype(np.int64)
            hi = np.minimum(lo + 1, np.maximum(c - 1, 0))
            a = np.take_along_axis(xs, lo[:, :, None], axis=-1)[:, :, 0]
            b = np.take_along_axis(xs, hi[:, :, None], axis=-1)[:, :, 0]
            with np.errstate(invalid="ignore"):
                pct[j][:, ~full] = a + (b - a) * (p - lo)
    invalid = ~valid
    x[invalid] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=1) / count
        x -= mean[:, None, :]
        x[invalid] = 0.0
        x *= x
        var = x.sum(axis=1) / count
    stats = np.stack([mean, np.sqrt(var), *pct], axis=-1)
    stats[count == 0] = np.nan
    return stats


def block_pooled(y: np.ndarray, sample_rate: int, *, starts_n: np.ndarray, window_n: int,
                 feature_set: str) -> np.ndarray:
    """Pooled features of the windows ``y[s:s + window_n]``, from one LLD pass over ``y``.

    Args:
        y: mono block ``[T]`` at ``sample_rate`` (the windows and any context around them).
        sample_rate: Hz.
        starts_n: window start samples in ``y`` ``[N]``.
        window_n: window length in samples.
        feature_set: one of :data:`POOLED_SETS`.

    Returns:
        float32 ``[N, len(feature_names(feature_set))]``.
    """
    frame_starts, frames = lld_frames(y, sample_rate, feature_set=feature_set)
    starts = np.asarray(starts_n, dtype=np.float64) / sample_rate
    return pool_frames(frames, frame_starts, starts, window_n / sample_rate)


def pooled_signal(y: np.ndarray, sample_rate: int, *, feature_set: str) -> np.ndarray:
    """Pooled features of a whole signal (an utterance), float32 ``[d]``: :func:`block_pooled`
    of one window spanning ``y``, which is how training extracts them."""
    y = np.asarray(y)
    return block_pooled(y, sample_rate, starts_n=np.zeros(1, np.int64), window_n=len(y),
                        feature_set=feature_set)[0]
