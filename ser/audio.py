"""Audio input/output: read, mix to mono, resample, stream in blocks, write WAV.

Reading goes through :mod:`soundfile` (libsndfile: WAV in any PCM width, float WAV,
FLAC, OGG/Vorbis, MP3 with libsndfile >= 1.1); anything libsndfile cannot open
(M4A/AAC, exotic MP3) falls back to :func:`librosa.load`, which decodes through
audioread and therefore needs ffmpeg (or GStreamer) on ``PATH``.

M4A/AAC (:data:`FFMPEG_EXTENSIONS`) always need ffmpeg: without ``ffmpeg`` on ``PATH``
such a file fails at once with "M4A needs ffmpeg on PATH". :func:`find_audio_files`
expands folders (recursively) into the files with :data:`AUDIO_EXTENSIONS`.

Resampling uses soxr (``HQ``). The streaming reader feeds the same resampler in
fixed-size chunks, so :func:`iter_blocks` and :func:`load` return the same samples
(soxr's streaming output does not depend on how the input is chunked), and the
resampled length is always ``round(frames * sample_rate / native_rate)``.

Bad input raises :class:`AudioError` (a ``ValueError``) naming the file: missing,
unreadable or non-audio files, files with no samples, and files holding NaN or
infinite samples. A silent (all-zero) file is *valid* audio and loads normally.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

#: Frames read from disk per chunk by the streaming reader (native rate).
READ_CHUNK: int = 1 << 16
#: Extensions that may need the audioread/ffmpeg fallback when libsndfile fails.
FALLBACK_EXTENSIONS: tuple[str, ...] = (".mp3", ".m4a", ".mp4", ".aac", ".wma", ".opus")
#: Extensions that libsndfile never decodes: these need ffmpeg (through audioread).
FFMPEG_EXTENSIONS: tuple[str, ...] = (".m4a", ".mp4", ".aac", ".wma")
#: Extensions :func:`find_audio_files` picks up in folders (compared case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus",
                                     ".aif", ".aiff", ".m4a", ".aac")


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or holds non-finite samples."""


# ---------------------------------------------------------------------------- helpers

def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist")
    if not path.is_file():
        raise AudioError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes)")


def ffmpeg_path() -> str | None:
    """Location of the ``ffmpeg`` executable on ``PATH`` (``None`` when absent)."""
    return shutil.which("ffmpeg")


def _check_decoder(path: Path) -> None:
    """Fail early, with the fix, for formats that need ffmpeg when it is missing."""
    if path.suffix.lower() in FFMPEG_EXTENSIONS and ffmpeg_path() is None:
        kind = path.suffix.lower().lstrip(".").upper()
        raise AudioError(f"cannot decode audio file {path}: {kind} needs ffmpeg on PATH "
                         "(install ffmpeg, or convert the file to WAV or FLAC)")


def _check_rate(sample_rate: int | None) -> None:
    if sample_rate is not None and (not isinstance(sample_rate, (int, np.integer))
                                    or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive integer (Hz) or None; got {sample_rate!r}")


def _check_finite(y: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(y)):
        first = int(np.argmin(np.isfinite(y).reshape(len(y), -1).all(axis=1)))
        raise AudioError(f"audio file {path} contains NaN or infinite samples (first at sample "
                         f"{first}); re-export it as PCM or clean the float data")


def _to_mono(y2d: np.ndarray) -> np.ndarray:
    """(frames, channels) → (frames,) by averaging the channels."""
    return y2d[:, 0] if y2d.shape[1] == 1 else y2d.mean(axis=1, dtype=np.float32)


def resampled_length(frames: int, *, orig_sr: int, target_sr: int) -> int:
    """Number of samples soxr produces when resampling ``frames`` samples.

    Args:
        frames: input length (samples).
        orig_sr: input rate (Hz).
        target_sr: output rate (Hz).

    Returns:
        ``round(frames * target_sr / orig_sr)``, computed in integers.
    """
    if orig_sr == target_sr:
        return int(frames)
    return int((2 * frames * target_sr + orig_sr) // (2 * orig_sr))


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr (HQ).

    Args:
        y: float32 samples, shape ``(n,)`` or ``(n, channels)``.
        orig_sr: rate of ``y`` (Hz).
        target_sr: wanted rate (Hz).

    Returns:
        float32 array of ``resampled_length(n)`` samples (same layout as ``y``).
    """
    _check_rate(orig_sr)
    _check_rate(target_sr)
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    return soxr.resample(np.asarray(y, dtype=np.float32), orig_sr, target_sr).astype(np.float32, copy=False)


def fix_length(y: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad the last axis of ``y`` to exactly ``n_samples``.

    Args:
        y: samples, shape ``(..., n)``.
        n_samples: wanted length (samples, >= 0).

    Returns:
        ``y`` itself when it already has that length, otherwise a new array.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0; got {n_samples}")
    n = y.shape[-1]
    if n == n_samples:
        return y
    if n > n_samples:
        return y[..., :n_samples]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n_samples - n)]
    return np.pad(y, pad)


def _librosa_load(path: Path, *, mono: bool) -> tuple[np.ndarray, int]:
    """Fallback decoder (audioread/ffmpeg). Returns (frames, channels) float32 and rate."""
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's "PySoundFile failed" FutureWarning
            y, sr = librosa.load(path, sr=None, mono=mono, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - audioread raises many unrelated types
        hint = (" (M4A/AAC and some MP3 need ffmpeg on PATH)"
                if path.suffix.lower() in FALLBACK_EXTENSIONS else "")
        raise AudioError(f"cannot decode audio file {path}: {type(e).__name__}: {e}{hint}") from e
    y2d = y[:, None] if y.ndim == 1 else y.T
    return np.ascontiguousarray(y2d, dtype=np.float32), int(sr)


# ---------------------------------------------------------------------------- public API

def info(path: str | os.PathLike[str]) -> tuple[float, int, int]:
    """Duration, native sample rate and channel count, read from the header.

    Args:
        path: audio file.

    Returns:
        ``(duration_s, sample_rate, channels)``; duration in seconds.

    Raises:
        AudioError: missing, unreadable or sample-less file.
    """
    frames, sr, ch = info_frames(Path(path))
    return frames / sr, sr, ch


def info_frames(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Like :func:`info` but with the length in frames: ``(frames, sample_rate, channels)``."""
    path = Path(path)
    _check_exists(path)
    _check_decoder(path)
    try:
        i = sf.info(str(path))
        frames, sr, ch = int(i.frames), int(i.samplerate), int(i.channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if path.suffix.lower() not in FALLBACK_EXTENSIONS:
            raise AudioError(f"cannot read audio file {path}: {e}; is it a WAV/FLAC/OGG/MP3 file?") from e
        try:
            import audioread

            with audioread.audio_open(str(path)) as f:
                sr, ch = int(f.samplerate), int(f.channels)
                frames = int(round(f.duration * sr))
        except Exception as e2:  # noqa: BLE001
            raise AudioError(f"cannot read audio file {path}: {e2} (needs ffmpeg on PATH)") from e2
    if frames <= 0 or sr <= 0:
        raise AudioError(f"audio file {path} contains no samples")
    return frames, sr, ch


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    mono: bool = True,
) -> tuple[np.ndarray, int]:
    """Read a whole audio file as float32 in [-1, 1].

    Args:
        path: audio file (WAV 8/16/24/32-bit PCM or float, FLAC, OGG, MP3; M4A with ffmpeg).
        sample_rate: resample to this rate (Hz); ``None`` keeps the native rate.
        mono: average the channels.

    Returns:
        ``(y, sr)``: ``y`` has shape ``(n,)`` when ``mono`` else ``(channels, n)``.

    Raises:
        AudioError: missing, unreadable, non-audio or empty file, or NaN/inf samples.

    Example:
        >>> y, sr = load("speech.flac", sample_rate=16000)  # doctest: +SKIP
    """
    path = Path(path)
    _check_rate(sample_rate)
    _check_exists(path)
    _check_decoder(path)
    try:
        y2d, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if path.suffix.lower() not in FALLBACK_EXTENSIONS:
            raise AudioError(f"cannot read audio file {path}: {e}; is it a WAV/FLAC/OGG/MP3 file?") from e
        y2d, sr = _librosa_load(path, mono=False)
    if y2d.shape[0] == 0:
        raise AudioError(f"audio file {path} contains no samples")
    _check_finite(y2d, path)
    y = _to_mono(y2d) if mono else y2d
    if sample_rate is not None and sample_rate != sr:
        y = resample(y, orig_sr=sr, target_sr=sample_rate)
        sr = sample_rate
    y = np.ascontiguousarray(y if mono else y.T, dtype=np.float32)
    return y, int(sr)


def iter_blocks(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    block_s: float,
    overlap_s: float = 0.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a mono, resampled file in overlapping blocks without loading it whole.

    Block ``k`` starts at sample ``k * block_n`` and holds ``block_n + overlap_n``
    samples (``block_n = round(block_s * sample_rate)``, likewise ``overlap_n``), fewer
    at the end of the file. Concatenating the first ``block_n`` samples of every block
    gives exactly ``load(path, sample_rate=sample_rate)[0]``. Memory is bounded by one
    block plus one read chunk, whatever the file's length. Formats that libsndfile
    cannot open (M4A) are decoded whole by the fallback and then sliced.

    Args:
        path: audio file.
        sample_rate: output rate (Hz).
        block_s: block hop (s, > 0).
        overlap_s: extra samples at the end of each block (s, >= 0), e.g. one analysis
            window so that every window starting inside the block fits in it.

    Yields:
        ``(start_sample, y)`` with ``y`` float32 of shape ``(n,)`` at ``sample_rate``.

    Raises:
        AudioError: as :func:`load` (NaN/inf is detected block by block).
    """
    _check_rate(sample_rate)
    if not (block_s > 0):
        raise ValueError(f"block_s must be > 0 seconds; got {block_s!r}")
    if not (overlap_s >= 0):
        raise ValueError(f"overlap_s must be >= 0 seconds; got {overlap_s!r}")
    block_n = max(1, int(round(block_s * sample_rate)))
    overlap_n = int(round(overlap_s * sample_rate))
    yield from iter_blocks_n(path, sample_rate=sample_rate, block_n=block_n, overlap_n=overlap_n)


def iter_blocks_n(
    path: str | os.PathLike[str], *, sample_rate: int, block_n: int, overlap_n: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`iter_blocks` with block and overlap given in samples at ``sample_rate``."""
    path = Path(path)
    frames, sr_in, _ = info_frames(path)
    n_total = resampled_length(frames, orig_sr=sr_in, target_sr=sample_rate)
    yield from _blocks_from_stream(_mono_stream(path, sample_rate), n_total=n_total,
                                   block_n=block_n, overlap_n=overlap_n)


def _mono_stream(path: Path, sample_rate: int) -> Iterator[np.ndarray]:
    """Resampled mono chunks of the whole file, in order."""
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if path.suffix.lower() not in FALLBACK_EXTENSIONS:
            raise AudioError(f"cannot read audio file {path}: {e}; is it a WAV/FLAC/OGG/MP3 file?") from e
        y, _ = load(path, sample_rate=sample_rate)
        for i in range(0, len(y), READ_CHUNK):
            yield y[i:i + READ_CHUNK]
        return
    with f:
        sr_in = int(f.samplerate)
        rs = None if sr_in == sample_rate else soxr.ResampleStream(
            sr_in, sample_rate, 1, dtype="float32", quality="HQ")
        read = 0
        while True:
            try:
                chunk = f.read(READ_CHUNK, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"cannot read audio file {path} after {read / sr_in:.1f} s: {e}") from e
            last = len(chunk) < READ_CHUNK
            if len(chunk):
                if not np.all(np.isfinite(chunk)):
                    raise AudioError(f"audio file {path} contains NaN or infinite samples "
                                     f"(near {read / sr_in:.1f} s); re-export it or clean the float data")
                read += len(chunk)
            mono = _to_mono(chunk) if len(chunk) else np.zeros(0, np.float32)
            out = mono if rs is None else rs.resample_chunk(mono, last=last)
            if len(out):
                yield np.asarray(out, dtype=np.float32)
            if last:
                break
        if read == 0:
            raise AudioError(f"audio file {path} contains no samples")


def _blocks_from_stream(
    stream: Iterator[np.ndarray], *, n_total: int, block_n: int, overlap_n: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a chunk stream into blocks; the stream is padded/trimmed to ``n_total``."""
    need = block_n + overlap_n
    buf: list[np.ndarray] = []
    have = 0        # samples in buf
    start = 0       # absolute index of buf's first sample
    exhausted = False
    while start < n_total:
        while have < need and start + have < n_total and not exhausted:
            try:
                c = next(stream)
            except StopIteration:
                exhausted = True
                break
            buf.append(c)
            have += len(c)
        cur = np.concatenate(buf) if len(buf) != 1 else buf[0]
        stop = min(start + need, n_total)
        block = cur[:stop - start]
        if len(block) < stop - start:  # stream shorter than the header said: zero-pad
            block = fix_length(block, stop - start)
        yield start, np.ascontiguousarray(block, dtype=np.float32)
        cur = cur[block_n:]
        buf, have, start = ([cur] if len(cur) else []), len(cur), start + block_n


def find_audio_files(
    inputs: Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders into a list of audio files.

    A file given by name is kept whatever its extension (reading it will tell whether it
    is audio); a folder is searched recursively for :data:`AUDIO_EXTENSIONS` (any case),
    hidden files and folders skipped, in sorted order. A file reached twice is listed once.

    Args:
        inputs: files and/or folders.

    Returns:
        ``(files, problems)``: the files in input order, each as given or as the folder
        joined with its relative path; and ``(path, reason)`` for inputs that do not exist
        or folders without audio files.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*")
                if q.suffix.lower() in AUDIO_EXTENSIONS and q.is_file()
                and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                problems.append((p, f"folder {p} holds no audio files "
                                    f"({', '.join(AUDIO_EXTENSIONS)})"))
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        else:
            problems.append((p, f"{p} does not exist"))
    return files, problems


def write_wav(path: str | os.PathLike[str], y: np.ndarray, sample_rate: int) -> Path:
    """Write PCM16 WAV atomically (temp file in the same folder, then rename).

    Args:
        path: output file (parents are created).
        y: float samples in [-1, 1] (clipped), shape ``(n,)`` or ``(n, channels)``.
        sample_rate: rate (Hz).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: NaN/inf samples or a bad shape/rate.
    """
    path = Path(path)
    _check_rate(sample_rate)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim not in (1, 2):
        raise ValueError(f"write_wav({path}): y must be (n,) or (n, channels); got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"write_wav({path}): y contains NaN or infinite samples")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(y, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
