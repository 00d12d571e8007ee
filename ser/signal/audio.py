"""Audio input/output: read, mix to mono, resample, stream in blocks, write WAV.

Reading goes through :mod:`soundfile` (libsndfile: WAV in any PCM width, float WAV,
FLAC, OGG/Vorbis, OGG/Opus). An ``ffmpeg`` subprocess decodes instead: M4A/AAC/MP4/WMA
(:data:`FFMPEG_EXTENSIONS`), which libsndfile never reads and which therefore fail at
once with "M4A needs ffmpeg on PATH" when ``ffmpeg`` is missing; MP3
(:data:`FFMPEG_PREFERRED_EXTENSIONS`) whenever ``ffmpeg`` is on ``PATH``, because
libsndfile's MP3 reader corrupts VBR files read in chunks (without ffmpeg an MP3 is
read by libsndfile in one piece, so its memory grows with its length); and files with
a :data:`FALLBACK_EXTENSIONS` extension that libsndfile cannot open.
:func:`find_audio_files` expands folders (recursively) into the files with
:data:`AUDIO_EXTENSIONS`.

Channels are mixed to mono by averaging them, and resampling uses soxr (``HQ``),
whatever the decoder. The streaming reader feeds the same resampler in fixed-size
chunks, so :func:`iter_blocks` and :func:`load` return the same samples (soxr's
streaming output does not depend on how the input is chunked), and the resampled
length is always ``round(frames * sample_rate / native_rate)``.

Decoding with ffmpeg. ``ffmpeg -i FILE -map 0:a:0 -c:a pcm_f32le -f wav pipe:1``
decodes the file's first audio stream at its native rate and channel count; its
output is read :data:`READ_CHUNK` frames at a time, so memory stays bounded by a
chunk whatever the file's length, as with soundfile, and the subprocess is killed
when a consumer stops early (closing the generator). Only the ``ffmpeg`` executable
is needed (``ffprobe`` is not used, so every machine gets the same lengths). The
length in frames is fixed up front (:func:`info_frames`) by this rule:

- ``round(duration * sample_rate)`` from the container duration that ``ffmpeg -i``
  reports (to the centisecond; for an MP4 with video, the longer of the tracks);
  the decoded stream is then trimmed or zero-padded at its end to exactly that
  length, so :func:`info_frames`, :func:`load` and :func:`iter_blocks` always agree.
  The decoders differ from the container by a few ms (AAC priming and padding, the
  centisecond rounding); a difference beyond :data:`LENGTH_TOLERANCE_S` (or
  :data:`LENGTH_TOLERANCE_REL` of the length, when larger) means a truncated or
  inconsistent file and raises :class:`AudioError` rather than pad or cut audio.
- When the container states no duration, or ffmpeg only estimates it from the bit
  rate (raw ADTS ``.aac``, MP3 without a Xing/VBRI header), the file is decoded once
  just to count its samples: exact, but each :func:`info_frames` call then costs a
  full decode (:func:`load` counts while it decodes and needs no extra pass).

Bad input raises :class:`AudioError` (a ``ValueError``) naming the file: missing,
unreadable or non-audio files (for ffmpeg: its exit status and the tail of its error
output), files with no samples or no audio stream, and files holding NaN or
infinite samples. A silent (all-zero) file is *valid* audio and loads normally.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

#: Frames read per chunk by the streaming reader (native rate), from libsndfile or ffmpeg.
READ_CHUNK: int = 1 << 16
#: Extensions that may need the ffmpeg fallback when libsndfile fails.
FALLBACK_EXTENSIONS: tuple[str, ...] = (".mp3", ".m4a", ".mp4", ".aac", ".wma", ".opus")
#: Extensions that libsndfile never decodes: these always go through ffmpeg.
FFMPEG_EXTENSIONS: tuple[str, ...] = (".m4a", ".mp4", ".aac", ".wma")
#: Extensions libsndfile reads but ffmpeg decodes instead whenever it is on ``PATH``:
#: libsndfile 1.2's MP3 reader returns wrong samples at every read boundary of a VBR
#: file (so it cannot be streamed) and misjudges the length of files without a Xing header.
FFMPEG_PREFERRED_EXTENSIONS: tuple[str, ...] = (".mp3",)
#: Extensions :func:`find_audio_files` picks up in folders (compared case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus",
                                     ".aif", ".aiff", ".m4a", ".aac")
#: Largest gap (s) between the container's duration and the length ffmpeg decodes that
#: is absorbed by trimming or zero-padding the end; beyond it the file is rejected.
LENGTH_TOLERANCE_S: float = 1.0
#: The same gap as a fraction of the length, used when larger than :data:`LENGTH_TOLERANCE_S`.
LENGTH_TOLERANCE_REL: float = 0.001
#: Seconds ffmpeg may take to open a file and decode its first frame (:func:`info_frames`).
PROBE_TIMEOUT_S: float = 120.0

_DURATION_RE = re.compile(rb"Duration: (\d+):(\d{2}):(\d{2})(?:\.(\d+))?")
_ESTIMATED = b"Estimating duration from bitrate"


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or holds non-finite samples."""


# ---------------------------------------------------------------------------- helpers

def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist")
    if not path.is_file():
        raise AudioError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"audio file {path}: permission denied (this user may not read it)")
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


def _wants_ffmpeg(path: Path) -> bool:
    """Whether ffmpeg decodes this file without trying libsndfile first."""
    ext = path.suffix.lower()
    return ext in FFMPEG_EXTENSIONS or (ext in FFMPEG_PREFERRED_EXTENSIONS and ffmpeg_path() is not None)


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


def _finite_chunk(chunk: np.ndarray, path: Path, done: int, sample_rate: int) -> None:
    """Raise for NaN/inf in a chunk that starts ``done`` frames into the file."""
    ok = np.isfinite(chunk)
    if not np.all(ok):
        first = done + int(np.argmin(ok.reshape(len(chunk), -1).all(axis=1)))
        raise AudioError(f"audio file {path} contains NaN or infinite samples (first at sample "
                         f"{first}, {first / sample_rate:.2f} s); re-export it or clean the float data")


# ---------------------------------------------------------------------------- ffmpeg

@dataclass(frozen=True)
class _Probe:
    """What ffmpeg reports for a file: decoded rate and channels, container length."""

    sample_rate: int
    channels: int
    frames: int | None  # round(container duration * rate); None: absent or estimated


def _ffmpeg_exe(path: Path, cause: BaseException | None = None) -> str:
    """The ffmpeg executable, or the "needs ffmpeg" error naming the file."""
    exe = ffmpeg_path()
    if exe is None:
        if cause is None:
            _check_decoder(path)
            raise AudioError(f"cannot decode audio file {path}: it needs ffmpeg on PATH "
                             "(install ffmpeg, or convert the file to WAV or FLAC)")
        raise AudioError(f"cannot read audio file {path}: {cause}; decoding it needs ffmpeg on "
                         "PATH (install ffmpeg, or convert the file to WAV or FLAC)")
    return exe


def _ffmpeg_cmd(exe: str, path: Path, *, loglevel: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Decode the first audio stream to float32 WAV (native rate and channels) on stdout."""
    return [exe, "-nostdin", "-hide_banner", "-nostats", "-v", loglevel,
            "-i", f"file:{path}",  # file: so that a ':' in the name is no protocol
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1", *extra,
            "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]


def _stderr_tail(stderr: bytes, *, lines: int = 4, chars: int = 600) -> str:
    text = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return " | ".join(text[-lines:])[-chars:]


def _ffmpeg_failed(path: Path, returncode: int, stderr: bytes) -> AudioError:
    if b"matches no streams" in stderr:
        return AudioError(f"audio file {path} contains no samples: ffmpeg finds no audio stream in it")
    return AudioError(f"cannot decode audio file {path} with ffmpeg (exit status {returncode}): "
                      f"{_stderr_tail(stderr) or 'no error message'}")


def _read_full(f: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes, fewer only at end of file."""
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _wav_header(f: BinaryIO, path: Path) -> tuple[int, int] | None:
    """Parse ffmpeg's streamed WAV header up to the data chunk: ``(rate, channels)``.

    Returns ``None`` when the stream ends before the data chunk (nothing decoded).
    The chunk sizes of a piped WAV are placeholders; the data runs to end of file.
    """
    head = _read_full(f, 12)
    if len(head) < 12:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError(f"cannot decode audio file {path}: unexpected ffmpeg output {head[:12]!r}")
    fmt = None
    while True:
        h = _read_full(f, 8)
        if len(h) < 8:
            return None
        cid, size = h[:4], int.from_bytes(h[4:], "little")
        if cid == b"data":
            break
        body = _read_full(f, size + (size & 1))
        if cid == b"fmt ":
            fmt = body
    if fmt is None or len(fmt) < 16 or int.from_bytes(fmt[14:16], "little") != 32:
        raise AudioError(f"cannot decode audio file {path}: ffmpeg wrote no float32 WAV format chunk")
    channels, rate = int.from_bytes(fmt[2:4], "little"), int.from_bytes(fmt[4:8], "little")
    if channels <= 0 or rate <= 0:
        raise AudioError(f"audio file {path} contains no samples (ffmpeg reports {channels} "
                         f"channels at {rate} Hz)")
    return rate, channels


def _ffmpeg_probe(path: Path) -> _Probe:
    """Rate and channels as decoded (first frame only) and the container's duration."""
    cmd = _ffmpeg_cmd(_ffmpeg_exe(path), path, loglevel="info", extra=("-frames:a", "1"))
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise AudioError(f"cannot decode audio file {path}: ffmpeg did not read its header "
                         f"within {PROBE_TIMEOUT_S:g} s") from e
    except OSError as e:
        raise AudioError(f"cannot decode audio file {path}: cannot run ffmpeg: {e}") from e
    if r.returncode != 0:
        raise _ffmpeg_failed(path, r.returncode, r.stderr)
    out = io.BytesIO(r.stdout)
    hdr = _wav_header(out, path)
    if hdr is None or not out.read(1):
        raise AudioError(f"audio file {path} contains no samples (ffmpeg decodes nothing)")
    rate, channels = hdr
    frames = None
    m = _DURATION_RE.search(r.stderr)
    if m is not None and _ESTIMATED not in r.stderr:
        h, mi, sec, frac = m.groups()
        seconds = int(h) * 3600 + int(mi) * 60 + int(sec) + (
            Fraction(int(frac), 10 ** len(frac)) if frac else 0)
        frames = round(seconds * rate) or None
    return _Probe(rate, channels, frames)


def _length_tolerance(frames: int, sample_rate: int) -> int:
    return max(round(LENGTH_TOLERANCE_S * sample_rate), int(LENGTH_TOLERANCE_REL * frames))


def _ffmpeg_frames(path: Path, probe: _Probe, *, frames: int | None) -> Iterator[np.ndarray]:
    """Decoded chunks, float32 ``(n, channels)`` at the native rate, read from a pipe.

    With ``frames`` the total is exactly ``frames`` (trimmed or zero-padded at the end,
    within the tolerance); with ``None`` it is whatever ffmpeg decodes. Every check
    (exit status, length, NaN) is done before the last chunk is yielded, so a
    consumer that stops once it has all the samples has seen every error. Closing
    the generator early kills ffmpeg and reaps it.
    """
    sr, ch = probe.sample_rate, probe.channels
    tol = None if frames is None else _length_tolerance(frames, sr)
    cmd = _ffmpeg_cmd(_ffmpeg_exe(path), path, loglevel="error")
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty ffmpeg cannot block on it
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        except OSError as e:
            raise AudioError(f"cannot decode audio file {path}: cannot run ffmpeg: {e}") from e

        def failed() -> AudioError:
            err.seek(0)
            return _ffmpeg_failed(path, proc.returncode, err.read())

        assert proc.stdout is not None
        try:
            hdr = _wav_header(proc.stdout, path)
            if hdr is not None and hdr != (sr, ch):
                raise AudioError(f"cannot decode audio file {path}: ffmpeg decodes {hdr[1]} channel(s) "
                                 f"at {hdr[0]} Hz, but reported {ch} at {sr} Hz when probed")
            got = 0          # frames decoded
            pending = None   # one chunk held back until the next read (see docstring)
            while hdr is not None:
                buf = np.empty((READ_CHUNK, ch), dtype="<f4")
                view, n = memoryview(buf).cast("B"), 0
                while n < len(view):
                    k = proc.stdout.readinto(view[n:])
                    if not k:
                        break
                    n += k
                chunk = buf[:n // (4 * ch)].astype(np.float32, copy=False)
                if len(chunk):
                    _finite_chunk(chunk, path, got, sr)
                    keep = chunk if frames is None else chunk[:max(0, frames - got)]
                    got += len(chunk)
                    if tol is not None and got - frames > tol:
                        raise AudioError(
                            f"audio file {path}: ffmpeg decodes more than {got / sr:.2f} s of audio "
                            f"but the container reports {frames / sr:.2f} s (inconsistent file); "
                            "re-export it, or extract the audio to WAV/FLAC")
                    if len(keep):
                        if pending is not None:
                            yield pending
                        pending = keep
                if n < len(view):
                    break
            if proc.wait() != 0:
                raise failed()
            if got == 0:
                raise AudioError(f"audio file {path} contains no samples (ffmpeg decodes nothing)")
            if tol is not None and frames - got > tol:
                err.seek(0)
                tail = _stderr_tail(err.read())
                raise AudioError(
                    f"audio file {path}: ffmpeg decodes only {got / sr:.2f} s of audio but the "
                    f"container reports {frames / sr:.2f} s (truncated file, or an audio track "
                    "shorter than the video); repair or re-export it, or extract the audio to WAV/FLAC"
                    + (f"; ffmpeg: {tail}" if tail else ""))
            if pending is not None:
                yield pending
            end = got if frames is None else frames
            for i in range(got, end, READ_CHUNK):  # zero-pad up to the container's length
                yield np.zeros((min(READ_CHUNK, end - i), ch), dtype=np.float32)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def _ffmpeg_load(path: Path, *, mono: bool) -> tuple[np.ndarray, int]:
    """Whole file via ffmpeg: ``(frames,)`` if ``mono`` else ``(frames, channels)``, and rate."""
    probe = _ffmpeg_probe(path)
    parts = [_to_mono(c) if mono else c for c in _ffmpeg_frames(path, probe, frames=probe.frames)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32), probe.sample_rate


def _sf_frames(path: Path) -> Iterator[np.ndarray]:
    """Chunks of a file libsndfile reads, float32 ``(n, channels)`` at the native rate."""
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"cannot read audio file {path}: {e}; is it a WAV/FLAC/OGG/MP3 file?") from e
    with f:
        sr_in, read = int(f.samplerate), 0
        if path.suffix.lower() in FFMPEG_PREFERRED_EXTENSIONS:
            # MP3 without ffmpeg: one read, as chunked reads corrupt VBR files (see
            # FFMPEG_PREFERRED_EXTENSIONS); memory then grows with the file.
            try:
                whole = f.read(dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"cannot read audio file {path}: {e}") from e
            _finite_chunk(whole, path, 0, sr_in)
            if len(whole) == 0:
                raise AudioError(f"audio file {path} contains no samples")
            for i in range(0, len(whole), READ_CHUNK):
                yield whole[i:i + READ_CHUNK]
            return
        while True:
            try:
                chunk = f.read(READ_CHUNK, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"cannot read audio file {path} after {read / sr_in:.1f} s: {e}") from e
            if len(chunk):
                _finite_chunk(chunk, path, read, sr_in)
                read += len(chunk)
                yield chunk
            if len(chunk) < READ_CHUNK:
                break
        if read == 0:
            raise AudioError(f"audio file {path} contains no samples")


@dataclass(frozen=True)
class _Source:
    """A file's length and format, and how it is decoded."""

    frames: int
    sample_rate: int
    channels: int
    probe: _Probe | None  # set when ffmpeg decodes the file


def _source(path: Path) -> _Source:
    """Header of a file: libsndfile when it can, else ffmpeg (length rule in the module docstring)."""
    _check_exists(path)
    _check_decoder(path)
    if not _wants_ffmpeg(path):
        try:
            i = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            if path.suffix.lower() not in FALLBACK_EXTENSIONS:
                raise AudioError(f"cannot read audio file {path}: {e}; is it a WAV/FLAC/OGG/MP3 file?") from e
            _ffmpeg_exe(path, e)
        else:
            frames, sr, ch = int(i.frames), int(i.samplerate), int(i.channels)
            if frames <= 0 or sr <= 0:
                raise AudioError(f"audio file {path} contains no samples")
            return _Source(frames, sr, ch, None)
    probe = _ffmpeg_probe(path)
    frames = probe.frames
    if frames is None:  # no trustworthy container duration: count by decoding
        frames = sum(len(c) for c in _ffmpeg_frames(path, probe, frames=None))
    return _Source(frames, probe.sample_rate, probe.channels, probe)


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
    """Like :func:`info` but with the length in frames: ``(frames, sample_rate, channels)``.

    For files decoded by ffmpeg the length follows the rule in the module docstring
    (container duration, or one counting decode when the container has none); it is
    always the length :func:`load` returns at the native rate.
    """
    src = _source(Path(path))
    return src.frames, src.sample_rate, src.channels


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    mono: bool = True,
) -> tuple[np.ndarray, int]:
    """Read a whole audio file as float32 in [-1, 1].

    Args:
        path: audio file (WAV 8/16/24/32-bit PCM or float, FLAC, OGG, MP3; M4A/AAC/MP4/WMA
            with ffmpeg).
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
    use_ffmpeg = _wants_ffmpeg(path)
    if not use_ffmpeg:
        try:
            y2d, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            if path.suffix.lower() not in FALLBACK_EXTENSIONS:
                raise AudioError(f"cannot read audio file {path}: {e}; is it a WAV/FLAC/OGG/MP3 file?") from e
            _ffmpeg_exe(path, e)
            use_ffmpeg = True
    if use_ffmpeg:
        y, sr = _ffmpeg_load(path, mono=mono)  # checked chunk by chunk
    else:
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
    block plus one read chunk, whatever the file's length, for every decoder (ffmpeg
    formats are streamed from its pipe too).

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
    block_n = max(1, round(block_s * sample_rate))
    overlap_n = round(overlap_s * sample_rate)
    yield from iter_blocks_n(path, sample_rate=sample_rate, block_n=block_n, overlap_n=overlap_n)


def iter_blocks_n(
    path: str | os.PathLike[str], *, sample_rate: int, block_n: int, overlap_n: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`iter_blocks` with block and overlap given in samples at ``sample_rate``."""
    path = Path(path)
    src = _source(path)
    n_total = resampled_length(src.frames, orig_sr=src.sample_rate, target_sr=sample_rate)
    stream = _mono_stream(path, src, sample_rate)
    try:
        yield from _blocks_from_stream(stream, n_total=n_total, block_n=block_n, overlap_n=overlap_n)
    finally:
        stream.close()  # stops an ffmpeg decoder at once when the consumer stops early


def _mono_stream(path: Path, src: _Source, sample_rate: int) -> Iterator[np.ndarray]:
    """Resampled mono chunks of the whole file, in order (the native chunks, mixed and
    fed to one soxr stream; the chunk after the last is read ahead to flag the end)."""
    frames = (_sf_frames(path) if src.probe is None
              else _ffmpeg_frames(path, src.probe, frames=src.frames))
    rs = None if src.sample_rate == sample_rate else soxr.ResampleStream(
        src.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    try:
        chunk = next(frames, None)
        while chunk is not None:
            following = next(frames, None)
            mono = _to_mono(chunk)
            out = mono if rs is None else rs.resample_chunk(mono, last=following is None)
            if len(out):
                yield np.asarray(out, dtype=np.float32)
            chunk = following
    finally:
        frames.close()


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
        buf.clear()  # the chunks freed at once: one block in memory, not its chunks as well
        stop = min(start + need, n_total)
        block = cur[:stop - start]
        if len(block) < stop - start:  # stream shorter than the header said: zero-pad
            block = fix_length(block, stop - start)
        yield start, np.ascontiguousarray(block, dtype=np.float32)
        cur = cur[block_n:].copy()  # the overlap alone, so the block can be freed before the next is read
        del block
        buf, have, start = ([cur] if len(cur) else []), len(cur), start + block_n


def find_audio_files(
    inputs: Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders into a list of audio files.

    A file given by name is kept whatever its extension (reading it will tell whether it
    is audio); a folder is searched recursively for :data:`AUDIO_EXTENSIONS` (any case),
    hidden files and folders skipped, in sorted order, following symbolic links to
    folders. A file reached twice is listed once. Every entry the scan has to skip is
    named in ``problems``: a symbolic link that leads back into a folder being searched
    (a loop), a broken link, a subfolder it may not list and an audio file it may not read
    ("permission denied").

    Args:
        inputs: files and/or folders.

    Returns:
        ``(files, problems)``: the files in input order, each as given or as the folder
        joined with its relative path; and ``(path, reason)`` for inputs that do not exist,
        folders without audio files and the entries skipped inside folders.
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
            found, skipped = _scan_folder(p)
            problems.extend(skipped)
            if not found and not skipped:
                reason = f"folder {p} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
                problems.append((p, reason))
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        elif p.is_symlink():
            problems.append((p, f"{p} is a broken symbolic link (its target {os.readlink(p)} does not exist)"))
        else:
            problems.append((p, f"{p} does not exist"))
    return files, problems


def _scan_folder(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Audio files under ``root`` (sorted) and the entries skipped, with the reason."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []

    def walk(folder: Path, chain: tuple[Path, ...]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except PermissionError:
            skipped.append((folder, f"folder {folder}: permission denied (not searched)"))
            return
        except OSError as e:
            skipped.append((folder, f"folder {folder} cannot be listed: {e.strerror or e}"))
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            q = folder / e.name
            try:
                is_dir = e.is_dir()
                is_file = not is_dir and e.is_file()
            except OSError as err:  # e.g. too many levels of symbolic links
                skipped.append((q, f"{q} cannot be examined: {err.strerror or err}"))
                continue
            if is_dir:
                real = q.resolve()
                if real in chain:
                    skipped.append((q, f"{q} is a symbolic link loop (it leads back to {real}); "
                                       "not followed"))
                else:
                    walk(q, (*chain, real))
            elif not is_file and e.is_symlink():  # maybe a folder's link: named whatever its name
                skipped.append((q, f"{q} is a broken symbolic link (its target {os.readlink(q)} "
                                   "does not exist)"))
            elif q.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            elif not is_file:
                skipped.append((q, f"{q} is not a regular file"))
            elif not os.access(q, os.R_OK):
                skipped.append((q, f"audio file {q}: permission denied (this user may not read it)"))
            else:
                found.append(q)

    walk(root, (root.resolve(),))
    return sorted(found), skipped


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
