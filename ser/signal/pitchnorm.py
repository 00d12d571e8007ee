"""Speaker pitch normalisation: move a voice's register to a common F0 before the model.

Why: an emotion classifier that hears absolute pitch reads a speaker's register as
emotion. A caregiver who talks 2 semitones higher to a patient than in the control
phase then sounds "happier" or "angrier" to it, although nothing but the register
changed (on the synthetic demo: neutral speech read as p_sad 0.78 in control and 0.55
in care). With normalisation the model hears every voice at the same register and has
to use *relative* pitch (contour, range) and the other cues (loudness, tempo, voice
quality); the register itself stays measured on the original audio (``f0_hz``).

What it does:

- **Reference** (:func:`register_hz`): the voice's baseline pitch, the
  :data:`BASELINE_PERCENTILE` (20th) percentile of the log-F0 of the voiced frames within
  half an octave (:data:`BAND_ST` = 6 semitones) of their median. The band keeps a second
  voice an octave away (a man's ~100 Hz voice in a woman's recording) out. A low
  percentile rather than the mean is used because aroused speech raises the upper part
  of a speaker's F0 distribution much more than its lower part: the baseline of the voice
  moves less with the emotion mix (cf. Traunmüller & Eriksson 1995 on the F0 baseline).
  On the demo, with the mean, a recording holding more happy speech had a higher
  reference and its neutral speech was heard as sadder; with the 20th percentile the
  model heard each emotion alike in both phases (``benchmarks/RESULTS.md``). F0 is
  Praat's autocorrelation pitch (``To Pitch (ac)``, 75-600 Hz, every 30 ms).
- **Shift** (:func:`shift_pitch`): Praat's PSOLA manipulation (``To Manipulation``,
  pitch tier multiplied by one constant ratio, ``Get resynthesis (overlap-add)``)
  changes F0 and keeps the formants and the timing, so the signal keeps its length.
- **Groups**: in training and evaluation the group is a corpus speaker (all their
  utterances); in windowed inference it is one recording (:func:`recording_register_hz`
  streams it block by block, so memory stays bounded). Both are label-free.

A model bundle trained with ``pitch_norm_hz`` > 0 (stage 02) stores that target in
``model.json``, and stage 03, stage 04 and ``ser predict`` apply the same normalisation
before the model (see :mod:`ser.models.bundle`).

Example:
    >>> ref = register_hz([y1, y2], 16000)                   # doctest: +SKIP
    >>> y1n = shift_pitch(y1, 16000, semitones=semitones_to(200.0, ref))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ser.signal import audio

#: Half-width of the band around the median log-F0 that counts as the voice's register, semitones.
BAND_ST: float = 6.0
#: Percentile of the in-band log-F0 taken as the voice's register (its baseline pitch).
BASELINE_PERCENTILE: float = 20.0
#: Pitch search range, Hz (Praat's default floor; a ceiling above high female speech).
F0_MIN_HZ: float = 75.0
F0_MAX_HZ: float = 600.0
#: Pitch analysis step of the register, s (a percentile needs no finer grid; 3x cheaper than 10 ms).
HOP_S: float = 0.03
#: Pitch analysis step of the PSOLA manipulation, s (Praat's default).
MANIPULATION_STEP_S: float = 0.01
#: Shifts smaller than this are not applied (semitones): PSOLA would only add noise.
MIN_SHIFT_ST: float = 0.01
#: Largest shift applied (semitones): beyond it PSOLA artefacts dominate; more is clipped.
MAX_SHIFT_ST: float = 12.0
#: Audio decoded at once by :func:`recording_register_hz`, s.
BLOCK_S: float = 120.0


def _too_short(n: int, sr: int) -> bool:
    """Shorter than Praat's pitch analysis window (3 periods of :data:`F0_MIN_HZ`)."""
    return n < int(3.0 / F0_MIN_HZ * sr) + 1


def _sound(y: np.ndarray, sr: int):
    import parselmouth

    return parselmouth.Sound(np.asarray(y, dtype=np.float64), sampling_frequency=float(sr))


def voiced_semitones(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """F0 of the voiced frames of ``y``, in semitones re 1 Hz.

    Args:
        y: mono signal ``[T]``.
        sample_rate: Hz.

    Returns:
        ``12 * log2(f0 / 1 Hz)`` of each voiced frame (every :data:`HOP_S` s; empty when none, or when
        ``y`` is shorter than Praat's 40 ms analysis window).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"voiced_semitones needs a mono signal [T]; got shape {y.shape}")
    if _too_short(len(y), sample_rate):
        return np.zeros(0)
    pitch = _sound(y, sample_rate).to_pitch_ac(time_step=HOP_S, pitch_floor=F0_MIN_HZ,
                                                 pitch_ceiling=F0_MAX_HZ)
    f0 = pitch.selected_array["frequency"]
    f0 = f0[f0 > 0]
    return 12.0 * np.log2(f0)


def register_from_semitones(semitones: np.ndarray) -> float:
    """The register (Hz) from voiced-frame semitones: the :data:`BASELINE_PERCENTILE`
    percentile of those within :data:`BAND_ST` of the median.

    Returns NaN when there are no voiced frames.
    """
    st = np.asarray(semitones, dtype=np.float64)
    st = st[np.isfinite(st)]
    if st.size == 0:
        return math.nan
    med = float(np.median(st))
    core = st[np.abs(st - med) <= BAND_ST]
    return float(2.0 ** (np.percentile(core, BASELINE_PERCENTILE) / 12.0))


def register_hz(waves: Iterable[np.ndarray], sample_rate: int) -> float:
    """The register of one voice over several signals (e.g. a speaker's utterances), Hz.

    Args:
        waves: mono signals ``[T]`` at ``sample_rate``.
        sample_rate: Hz.

    Returns:
        The baseline F0 (:func:`register_from_semitones`) of all the voiced frames
        together, Hz; NaN when no frame is voiced.
    """
    parts = [voiced_semitones(y, sample_rate) for y in waves]
    return register_from_semitones(np.concatenate(parts) if parts else np.zeros(0))


def recording_register_hz(path: str | Path, *, sample_rate: int, block_s: float = BLOCK_S) -> float:
    """:func:`register_hz` of a whole audio file, read block by block (bounded memory).

    Raises:
        ser.signal.audio.AudioError: the file is missing or unreadable.
    """
    block_n = max(1, int(round(block_s * sample_rate)))
    blocks = audio.iter_blocks_n(path, sample_rate=sample_rate, block_n=block_n, overlap_n=0)
    try:
        return register_hz((y for _, y in blocks), sample_rate)
    finally:
        blocks.close()  # an ffmpeg decoder stops at once if the analysis fails


def semitones_to(target_hz: float, register: float) -> float:
    """The shift (semitones) that moves ``register`` (Hz) to ``target_hz``; 0 when unknown.

    Clipped to +-:data:`MAX_SHIFT_ST`; a NaN register (no voiced frame) gives 0.
    """
    if not (target_hz > 0):
        raise ValueError(f"target_hz must be > 0 Hz; got {target_hz!r}")
    if not (register > 0):  # NaN or 0: nothing voiced, leave the audio as it is
        return 0.0
    return float(np.clip(12.0 * math.log2(target_hz / register), -MAX_SHIFT_ST, MAX_SHIFT_ST))


def shift_pitch(y: np.ndarray, sample_rate: int, *, semitones: float) -> np.ndarray:
    """Shift F0 by ``semitones`` with PSOLA, keeping formants and timing.

    Args:
        y: mono signal ``[T]``.
        sample_rate: Hz.
        semitones: shift (positive = higher); ``|semitones|`` < :data:`MIN_SHIFT_ST`
            returns ``y`` unchanged.

    Returns:
        float32 ``[T]`` (same length as ``y``). Unvoiced parts pass through PSOLA's
        overlap-add unchanged in pitch.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"shift_pitch needs a mono signal [T]; got shape {y.shape}")
    if not math.isfinite(semitones):
        raise ValueError(f"semitones must be finite; got {semitones!r}")
    if abs(semitones) < MIN_SHIFT_ST or _too_short(len(y), sample_rate):
        return y.astype(np.float32, copy=True)
    from parselmouth.praat import call

    snd = _sound(y, sample_rate)
    manip = call(snd, "To Manipulation", MANIPULATION_STEP_S, F0_MIN_HZ, F0_MAX_HZ)
    return _resynthesise(manip, snd, semitones=semitones, n=len(y))


def _resynthesise(manip: Any, sound: Any, *, semitones: float, n: int) -> np.ndarray:
    """PSOLA overlap-add of the Praat Manipulation of ``sound`` with its pitch tier scaled,
    float32 ``[n]``."""
    from parselmouth.praat import call

    tier = call(manip, "Extract pitch tier")
    call(tier, "Multiply frequencies", sound.xmin, sound.xmax, 2.0 ** (semitones / 12.0))
    call([tier, manip], "Replace pitch tier")
    out = call(manip, "Get resynthesis (overlap-add)").values[0]
    return audio.fix_length(out.astype(np.float32), n)


def shares_pitch(*, fmin: float, fmax: float, hop_s: float) -> bool:
    """Whether a Praat pitch analysis with these settings (``To Pitch (ac)``, Praat's
    default voicing) is the one :func:`shift_pitch` runs, so :func:`shift_pitch_praat`
    can reuse it."""
    return (fmin, fmax, hop_s) == (F0_MIN_HZ, F0_MAX_HZ, MANIPULATION_STEP_S)


def shift_pitch_praat(sound: Any, pitch: Any, *, semitones: float) -> np.ndarray:
    """:func:`shift_pitch` of a Praat Sound whose pitch analysis is already done.

    ``Sound & Pitch: To Manipulation`` then the same overlap-add as :func:`shift_pitch`,
    which equals :func:`shift_pitch` of the Sound's samples (to float32 rounding) when
    ``pitch`` is ``To Pitch (ac)`` of that Sound with :data:`MANIPULATION_STEP_S`,
    :data:`F0_MIN_HZ` and :data:`F0_MAX_HZ` (:func:`shares_pitch`), and saves that
    analysis (about two thirds of the shift's time). Windowed inference passes the
    pitch its F0 column was measured with (:func:`ser.signal.features.praat_pitch`).

    Args:
        sound: ``parselmouth.Sound`` (mono).
        pitch: ``parselmouth.Pitch`` of ``sound``.
        semitones: shift (positive = higher); below :data:`MIN_SHIFT_ST` the samples are
            returned unchanged.

    Returns:
        float32 ``[sound.n_samples]``.
    """
    if not math.isfinite(semitones):
        raise ValueError(f"semitones must be finite; got {semitones!r}")
    y = np.asarray(sound.values[0], dtype=np.float32)
    if abs(semitones) < MIN_SHIFT_ST or _too_short(len(y), int(round(sound.sampling_frequency))):
        return y.copy()
    from parselmouth.praat import call

    manip = call([sound, pitch], "To Manipulation")
    return _resynthesise(manip, sound, semitones=semitones, n=len(y))


def normalise_group(waves: Sequence[np.ndarray], sample_rate: int, *,
                    target_hz: float) -> tuple[list[np.ndarray], float]:
    """Shift every signal of one voice by the same amount so its register is ``target_hz``.

    Args:
        waves: the voice's mono signals (e.g. one speaker's utterances).
        sample_rate: Hz.
        target_hz: register after normalisation, Hz.

    Returns:
        ``(shifted, semitones)``: the shifted signals (float32, same lengths) and the
        shift applied (0 when nothing in the group is voiced).
    """
    st = semitones_to(target_hz, register_hz(waves, sample_rate))
    return [shift_pitch(y, sample_rate, semitones=st) for y in waves], st


def normalise_by_group(waves: Mapping[str, np.ndarray], groups: Mapping[str, str], sample_rate: int, *,
                       target_hz: float, progress: bool = False,
                       desc: str = "pitch normalisation") -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """:func:`normalise_group` for every group (e.g. speaker) of a set of signals.

    Args:
        waves: ``{key: mono signal}`` (e.g. file path to waveform).
        groups: ``{key: group}`` for every key of ``waves`` (e.g. path to speaker id).
        sample_rate: Hz.
        target_hz: register after normalisation, Hz.
        progress: show a tqdm bar over the groups.
        desc: the bar's label.

    Returns:
        ``(shifted, semitones)``: the shifted signals under the same keys, and the shift
        applied to each group (semitones).

    Raises:
        KeyError: a key of ``waves`` has no group (names it).
    """
    from tqdm.auto import tqdm

    members: dict[str, list[str]] = {}
    for key in waves:
        if key not in groups:
            raise KeyError(f"pitch normalisation: no speaker/group given for {key!r}")
        members.setdefault(str(groups[key]), []).append(key)
    out: dict[str, np.ndarray] = {}
    shifts: dict[str, float] = {}
    for group, keys in tqdm(sorted(members.items()), desc=desc, unit="speaker", disable=not progress):
        shifted, shifts[group] = normalise_group([waves[k] for k in keys], sample_rate, target_hz=target_hz)
        out.update(zip(keys, shifted))
    return out, shifts


def check_target(target_hz: float) -> float:
    """Validate a ``pitch_norm_hz`` option: 0 (off) or a register in 60..400 Hz."""
    if isinstance(target_hz, bool) or not isinstance(target_hz, (int, float, np.integer, np.floating)):
        raise ValueError(f"pitch_norm_hz must be a number (0: off, else a target register in Hz); "
                         f"got {target_hz!r}")
    value = float(target_hz)
    if value != 0.0 and not 60.0 <= value <= 400.0:
        raise ValueError(f"pitch_norm_hz must be 0 (off) or a register in 60..400 Hz; got {target_hz!r}")
    return value


class SpeakerLoader:
    """Read utterances at a model's rate, pitch-normalised per speaker when the model wants it.

    ``loader(path, speaker)`` returns :func:`ser.signal.audio.load`'s mono float32 signal; when
    ``target_hz`` > 0 it is shifted by the speaker's shift, computed on first use from all
    of that speaker's files in ``rows`` (label-free: the utterances' audio only). Used by
    stage 03 (evaluation, calibration) so a normalised model is scored on the input it
    was trained on.

    Args:
        rows: table with ``path, speaker`` (the utterances that will be loaded).
        sample_rate: Hz.
        target_hz: register (Hz) of the model (``bundle.pitch_norm_hz``); 0: no shift.
    """

    def __init__(self, rows: Any, *, sample_rate: int, target_hz: float) -> None:
        self.sample_rate = int(sample_rate)
        self.target_hz = float(target_hz)
        self._files: dict[str, list[str]] = {}
        if self.target_hz > 0:
            for p, spk in zip(rows["path"].astype(str), rows["speaker"].astype(str)):
                self._files.setdefault(spk, []).append(p)
        self.shifts: dict[str, float] = {}

    def shift_of(self, speaker: str) -> float:
        """The speaker's shift in semitones (0 when the model is not normalised)."""
        speaker = str(speaker)
        if self.target_hz <= 0:
            return 0.0
        if speaker not in self.shifts:
            ref = register_hz(self._readable(self._files.get(speaker, [])), self.sample_rate)
            self.shifts[speaker] = semitones_to(self.target_hz, ref)
        return self.shifts[speaker]

    def _readable(self, files: Iterable[str]) -> Iterator[np.ndarray]:
        for p in files:
            try:
                yield audio.load(p, sample_rate=self.sample_rate)[0]
            except (audio.AudioError, OSError, ValueError):
                continue  # the caller meets (and reports) the unreadable file itself

    def __call__(self, path: str | Path, speaker: str) -> np.ndarray:
        y = audio.load(path, sample_rate=self.sample_rate)[0]
        st = self.shift_of(speaker)
        return shift_pitch(y, self.sample_rate, semitones=st) if st else y
