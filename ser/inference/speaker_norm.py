"""Speaker normalisation at inference: the reference statistics of a bundle trained with
``speaker_norm`` (:class:`ser.inference.protocol.SpeakerNormBundle`), per normalisation unit.

Such a model z-scores each window's features with the mean and standard deviation of
the same person's features, as in training (:func:`ser.models.classical.features.speaker_standardize`).
At inference those statistics come from unlabelled audio of the person being scored,
which makes the method *transductive*. The unit (:attr:`ser.inference.options.InferenceOptions.norm_unit`):

- ``"caregiver"`` (default): all recordings of one person, **pooled over both phases**,
  so one reference serves the control and the care recording and the phase difference
  the study measures is kept (a reference per recording would z-score it away). In
  stage 04 the person is the ``caregiver`` column; in ``ser predict`` the ``--speaker-of``
  mapping (:func:`read_speaker_map`).
- ``"recording"``: each recording alone.
- ``"none"``: refused for such a bundle (it cannot run without a reference).

Reference windows. A first pass over each recording (:func:`recording_moments`) cuts the
same windows, in the same blocks, as the inference itself
(:func:`ser.inference.recording.plan_blocks`); the windows whose ``speech_ratio`` (the
column of ``windows.csv``) is at least :data:`MIN_SPEECH_RATIO` are the reference windows.
Their model features (what the model sees) are accumulated per feature set in a
:class:`ser.models.classical.features.RunningMoments`, block by block, so memory stays
that of one block of audio however long the recordings are. A unit's reference is the moments
of all its recordings' reference windows; the second pass predicts every window of each
recording with its unit's reference. With feature workers the first pass runs one recording
per worker and merges their moments in input order (the same references as without).

The rule: the first pass hears what the model hears. It computes a block's model features
with the code the windows pass runs (:func:`ser.inference.workers.shared_pitch`,
:func:`~ser.inference.workers.model_block`, :func:`~ser.inference.workers.block_model_features`):
the same register, the same PSOLA shift of the block (reusing the pitch analysis of the F0
column when the F0 options allow), the same zero-padding of the last window, and, in
caregiver mode (``silence_s``), the same silenced turns. So each reference window's
features equal bit for bit those the model gets for that window. They are small (a few
hundred bytes a window) and kept (:attr:`RecordingMoments.known`, :attr:`UnitReference.known`):
the windows pass of a classical bundle takes them instead of computing them again
(:class:`ser.inference.recording.KnownFeatures`) and computes only the other windows,
with the same result.

Too little speech. A unit's speech is ``sum(speech_ratio) * hop_s`` over all its windows
(each stretch of audio counted about once). A unit with less than
:data:`MIN_REFERENCE_SPEECH_S` seconds of speech (or fewer than 2 reference windows) is
normalised with the pooled statistics of every unit of the run instead (the **fallback
rule**), and its windows carry ``norm_fallback = True``; :func:`fallback_problems` lists
them for the stage-04 problem output. When the whole run has fewer than 2 reference
windows, no reference exists and its recordings fail with that reason.

Columns (:data:`NORM_COLUMNS`, after ``padded``, only for such a bundle): ``norm_unit``
(the id of the recording's unit: its caregiver, person or recording id) and
``norm_fallback``. Resume: each recording's reference is fingerprinted
(:func:`reference_key`) into the model stamp (:func:`norm_stamp`); rows computed with
another unit or another reference are never reused.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ser.inference import recording, workers
from ser.inference.options import InferenceOptions
from ser.inference.protocol import SpeakerNormBundle
from ser.inference.workers import Workers, feature_workers
from ser.models.classical.features import RunningMoments
from ser.signal import features

#: Least ``speech_ratio`` of a reference window.
MIN_SPEECH_RATIO: float = 0.5
#: Least speech (s) of a unit for its own reference; below it the fallback rule applies.
MIN_REFERENCE_SPEECH_S: float = 30.0
#: Columns added after ``padded`` for a bundle that needs a reference.
NORM_COLUMNS: tuple[str, ...] = ("norm_unit", "norm_fallback")
#: Columns of a ``--speaker-of`` mapping: one of each pair (file, person).
SPEAKER_MAP_FILE_COLUMNS: tuple[str, ...] = ("file", "path")
SPEAKER_MAP_PERSON_COLUMNS: tuple[str, ...] = ("speaker", "caregiver")


@dataclass
class RecordingMoments:
    """What the first pass found in one recording.

    Attributes:
        moments: ``{feature_set: RunningMoments}`` of its reference windows' features.
        speech_s: its speech, ``sum(speech_ratio) * hop_s`` (s).
        n_windows: its reference windows.
        known: the reference windows' model features themselves, by window start (for the
            windows pass to take instead of computing them again); None when not kept.
    """

    moments: dict[str, RunningMoments] = field(default_factory=dict)
    speech_s: float = 0.0
    n_windows: int = 0
    known: recording.KnownFeatures | None = None

    def merge(self, other: RecordingMoments) -> RecordingMoments:
        """Add another recording's windows (not its :attr:`known` features); returns self."""
        for s, m in other.moments.items():
            self.moments.setdefault(s, RunningMoments()).merge(m)
        self.speech_s += other.speech_s
        self.n_windows += other.n_windows
        return self


@dataclass(frozen=True)
class UnitReference:
    """The reference of one normalisation unit.

    Attributes:
        unit: the unit's id (caregiver, person or recording).
        members: the recordings (or files) of the unit.
        speech_s: the unit's own speech (s).
        n_windows: the unit's own reference windows.
        fallback: True when the unit had too little speech and ``reference`` is the
            run's pooled statistics (see the module docstring).
        reference: ``{feature_set: (mean, std)}`` used for its recordings.
        key: :func:`reference_key` of ``reference``.
        known: ``{recording: KnownFeatures}``: the model features of each member's reference
            windows from the first pass, which the windows pass takes instead of computing
            them again (:func:`ser.inference.recording.predict_file`'s ``known``).
    """

    unit: str
    members: tuple[str, ...]
    speech_s: float
    n_windows: int
    fallback: bool
    reference: dict[str, tuple[np.ndarray, np.ndarray]]
    key: str
    known: Mapping[str, recording.KnownFeatures] = field(default_factory=dict)


def reference_key(reference: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """SHA-256 of a reference's statistics (and of the reference-window rule)."""
    h = hashlib.sha256(f"min_speech_ratio={MIN_SPEECH_RATIO!r}".encode())
    for s in sorted(reference):
        h.update(s.encode())
        for a in reference[s]:
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def recording_moments(bundle: SpeakerNormBundle, path: Path, *, options: InferenceOptions,
                      silence_s: np.ndarray | None = None) -> RecordingMoments:
    """First pass over one recording: the moments of its reference windows' model features,
    and those features (:attr:`RecordingMoments.known`).

    The features are computed as the windows pass computes them (the module docstring), so
    a reference window's features equal bit for bit those the model gets for that window.

    Args:
        bundle: a bundle that needs a reference.
        path: audio file.
        options: resolved options (hop and block size give the windows and blocks; the F0
            options whether the shift shares the F0 column's pitch analysis).
        silence_s: the stretches the windows pass silences (``[k, 2]`` s, caregiver mode:
            :func:`ser.inference.recording.predict_file`'s ``silence_s``), or None.

    Raises:
        ser.signal.audio.AudioError: the file cannot be read.
    """
    sr, win_n = int(bundle.sample_rate), int(bundle.window_samples)
    plan = recording.window_plan(bundle, path, options=options)
    hop, opts = float(options.hop_s), options.feature_options()
    shift_st = 0.0
    if bundle.pitch_norm_hz > 0:
        shift_st = recording.recording_shift(path, sr=sr, target_hz=bundle.pitch_norm_hz,
                                             block_n=plan.block_n, pool=None, timings=None)
    out = RecordingMoments()
    starts: list[np.ndarray] = []
    found: list[dict[str, np.ndarray]] = []
    blocks = recording.plan_blocks(path, plan, sample_rate=sr, window_samples=win_n)
    try:
        for off, y, i0, i1 in blocks:
            if i1 <= i0:
                continue
            local = plan.start_n[i0:i1] - off
            y, _ = recording.silence_block(y, sr, off / sr, silence_s)  # as the model hears it
            ratio = features.window_speech_ratio(y, sr, starts_s=local / sr, window_s=win_n / sr)
            out.speech_s += float(np.nansum(ratio)) * hop
            keep = np.nan_to_num(ratio) >= MIN_SPEECH_RATIO
            if not keep.any():
                continue
            # the windows pass's shift (with the pitch analysis its F0 column shares) and padding
            praat = workers.shared_pitch(y, sr, opts=opts, shift_st=shift_st)
            ymodel = workers.model_block(y, sr, shift_st=shift_st, praat=praat)
            feats = dict(workers.block_model_features(ymodel, local[keep], pad_n=int(local[-1]) + win_n,
                                                      model_features=bundle.features_at))
            for s, f in feats.items():
                out.moments.setdefault(s, RunningMoments()).update(f)
            out.n_windows += int(keep.sum())
            starts.append(plan.start_n[i0:i1][keep])
            found.append(feats)
    finally:
        blocks.close()
    out.known = recording.KnownFeatures.concat(starts, found)
    return out


def _moments_job(bundle: SpeakerNormBundle, path: Path, options: InferenceOptions,
                 silence_s: np.ndarray | None = None) -> tuple[RecordingMoments | None, str | None]:
    """:func:`recording_moments` of one file, or its error as ``"<type>: <message>"`` (runs in
    a feature worker or inline; the message travels back whatever the exception is)."""
    try:
        return recording_moments(bundle, path, options=options, silence_s=silence_s), None
    except Exception as e:  # noqa: BLE001 - reported per recording by unit_references
        return None, f"{type(e).__name__}: {e}"


def _first_passes(bundle: SpeakerNormBundle, paths: Sequence[tuple[Path, np.ndarray | None]], *,
                  options: InferenceOptions,
                  pool: Workers | None) -> Iterator[tuple[RecordingMoments | None, str | None]]:
    """:func:`_moments_job` of every ``(file, silence_s)``, in input order: one file per feature
    worker at a time (at most ``pool.n + 1`` submitted ahead), or inline without a pool."""
    if pool is None:
        for path, silence in paths:
            yield _moments_job(bundle, path, options, silence)
        return
    pending: deque[Future] = deque()
    try:
        for path, silence in paths:
            pending.append(pool.executor.submit(_moments_job, bundle, path, options, silence))
            while len(pending) > pool.n:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()


def unit_references(
    bundle: SpeakerNormBundle,
    units: Mapping[str, Sequence[tuple[str, Path]]],
    *,
    options: InferenceOptions,
    progress: bool = True,
    silence_s: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, UnitReference], dict[str, str]]:
    """The reference of every unit: one pass over each recording, then the fallback rule.

    Args:
        bundle: a bundle that needs a reference.
        units: ``{unit id: [(recording id, audio path), ...]}``; each recording in one unit.
        options: resolved options; with ``workers`` the first pass runs one recording per
            feature worker (:func:`ser.inference.workers.feature_workers`), the same references.
        progress: tqdm bar over the recordings (stderr).
        silence_s: ``{recording id: [k, 2] s}``, the stretches the windows pass silences in
            each recording (caregiver mode); a recording not in it is heard as recorded.

    Returns:
        ``(references, failures)``: ``{unit id: UnitReference}`` for every unit that has a
        reference, and ``{recording id: reason}`` for recordings that could not be read
        in the first pass or whose unit got no reference (no speech in the whole run).
    """
    failures: dict[str, str] = {}
    per_unit: dict[str, RecordingMoments] = {unit: RecordingMoments() for unit in units}
    known: dict[str, dict[str, recording.KnownFeatures]] = {unit: {} for unit in units}
    pooled = RecordingMoments()
    flat = [(unit, rec, Path(path)) for unit, members in units.items() for rec, path in members]
    bar = tqdm(total=len(flat), disable=not progress, desc="speaker reference", unit="rec", file=sys.stderr)
    with feature_workers(options.workers) as pool:
        silence = silence_s or {}
        passes = _first_passes(bundle, [(path, silence.get(rec)) for _, rec, path in flat],
                               options=options, pool=pool)
        # merged in input order, whichever process computed them: the same sums as one process
        for (unit, rec, _), (found, error) in zip(flat, passes, strict=True):
            if found is not None:
                per_unit[unit].merge(found)
                if found.known is not None:
                    known[unit][rec] = found.known
            else:  # the file fails again in pass 2; record it now
                failures[rec] = str(error)
            bar.update(1)
    for acc in per_unit.values():
        pooled.merge(acc)
    bar.close()

    def stats(acc: RecordingMoments) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {s: m.result() for s, m in acc.moments.items()}

    pooled_ref = stats(pooled) if pooled.n_windows >= 2 else None
    refs: dict[str, UnitReference] = {}
    for unit, acc in per_unit.items():
        members = tuple(rec for rec, _ in units[unit])
        own = acc.speech_s >= MIN_REFERENCE_SPEECH_S and acc.n_windows >= 2
        ref = stats(acc) if own else pooled_ref
        if ref is None:
            reason = (f"no speaker reference: normalisation unit {unit!r} has "
                      f"{acc.n_windows} speech window(s), and the whole run {pooled.n_windows}; "
                      f"at least 2 windows with speech_ratio >= {MIN_SPEECH_RATIO} are needed")
            for rec in members:
                failures.setdefault(rec, reason)
            continue
        refs[unit] = UnitReference(unit=unit, members=members, speech_s=acc.speech_s,
                                   n_windows=acc.n_windows, fallback=not own, reference=ref,
                                   key=reference_key(ref), known=known[unit])
    return refs, failures


def norm_stamp(norm_unit: str, keys: Mapping[str, str]) -> dict[str, Any]:
    """The ``norm`` entry of a model stamp: the unit and each recording's reference key."""
    return {"unit": norm_unit, "min_speech_s": MIN_REFERENCE_SPEECH_S, "references": dict(keys)}


def reusable(old_stamp: Mapping[str, Any] | None, new_norm: Mapping[str, Any]) -> set[str] | None:
    """Recordings whose stored rows were computed with the same reference as now.

    Returns:
        Their ids, or None when the stored unit (or fallback threshold) differs, so that
        nothing may be reused.
    """
    old = (old_stamp or {}).get("norm")
    if not isinstance(old, Mapping) or old.get("unit") != new_norm["unit"] \
            or old.get("min_speech_s") != new_norm["min_speech_s"]:
        return None
    old_refs = old.get("references") or {}
    return {r for r, k in new_norm["references"].items() if old_refs.get(r) == k}


def read_speaker_map(path: str | os.PathLike[str]) -> dict[Path, str]:
    """Read a ``--speaker-of`` CSV: the person of each audio file.

    Columns: ``file`` (or ``path``, as in a cohort ``manifest.csv``) and ``speaker`` (or
    ``caregiver``); other columns are ignored. Relative file paths are taken from the
    CSV's folder.

    Returns:
        ``{resolved file path: person id}``.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: missing columns, an empty person, or a file given twice with two persons.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--speaker-of {path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"--speaker-of {path}: not a readable CSV ({e})") from e
    fcol = next((c for c in SPEAKER_MAP_FILE_COLUMNS if c in df.columns), None)
    pcol = next((c for c in SPEAKER_MAP_PERSON_COLUMNS if c in df.columns), None)
    if fcol is None or pcol is None:
        raise ValueError(f"--speaker-of {path}: needs a column {' or '.join(SPEAKER_MAP_FILE_COLUMNS)} "
                         f"and a column {' or '.join(SPEAKER_MAP_PERSON_COLUMNS)}; got {list(df.columns)}")
    out: dict[Path, str] = {}
    for i, (f, p) in enumerate(zip(df[fcol], df[pcol], strict=True), start=2):
        if not str(f).strip() or not str(p).strip():
            raise ValueError(f"--speaker-of {path}, line {i}: empty {fcol} or {pcol}")
        key = (path.parent / str(f).strip()).resolve()
        if out.get(key, p.strip()) != p.strip():
            raise ValueError(f"--speaker-of {path}, line {i}: {f} is given two persons "
                             f"({out[key]!r} and {p.strip()!r})")
        out[key] = p.strip()
    return out


def file_units(files: Sequence[Path], *, norm_unit: str,
               speaker_of: Mapping[Path, str] | None) -> dict[str, list[tuple[str, Path]]]:
    """The normalisation units of ``ser predict``'s files: ``{unit: [(file key, path)]}``.

    With ``norm_unit="caregiver"`` the unit is each file's person in ``speaker_of``; with
    ``"recording"`` each file is its own unit (keyed by the file).

    Raises:
        ValueError: ``caregiver`` without a mapping, a mapping with another unit, a mapping
            that names files not given, or files given that the mapping lacks.
    """
    if norm_unit == "recording":
        if speaker_of is not None:
            raise ValueError("--speaker-of (speaker_of) groups files by person and applies to "
                             "norm unit 'caregiver' only; drop it or --norm-unit recording")
        return {str(f): [(str(f), f)] for f in files}
    if speaker_of is None:
        raise ValueError("this model was trained with speaker_norm and needs each file's person "
                         "to pool their audio: give --speaker-of CSV (columns file, speaker), "
                         "or --norm-unit recording (a reference per file)")
    given = {Path(f).resolve(): f for f in files}
    unknown = sorted(str(p) for p in speaker_of if p not in given)
    if unknown:
        raise ValueError(f"--speaker-of names {len(unknown)} file(s) that are not among the inputs "
                         f"(e.g. {unknown[:3]}); a person's reference must pool all their files: "
                         "give those files too, or remove them from the mapping")
    unmapped = sorted(str(f) for p, f in given.items() if p not in speaker_of)
    if unmapped:
        raise ValueError(f"--speaker-of lacks {len(unmapped)} input file(s) (e.g. {unmapped[:3]}); "
                         "every file needs its person")
    units: dict[str, list[tuple[str, Path]]] = {}
    for p, f in given.items():
        units.setdefault(speaker_of[p], []).append((str(f), f))
    return units


def fallback_problems(windows: pd.DataFrame, *, id_column: str = "recording") -> pd.DataFrame:
    """One row per recording normalised by the fallback rule, for a problem output.

    Args:
        windows: a window table with :data:`NORM_COLUMNS` (any other table gives no rows).
        id_column: the recording's id column (``recording``, or ``file`` for ``ser predict``).

    Returns:
        ``<id_column>, reason``.
    """
    if not set(NORM_COLUMNS) <= set(windows.columns) or windows.empty:
        return pd.DataFrame(columns=[id_column, "reason"])
    flagged = windows[windows["norm_fallback"].astype(bool)]
    rows = [{id_column: rec, "reason": (
        f"normalisation unit {unit} has less than {MIN_REFERENCE_SPEECH_S:g} s of speech: "
        "normalised with the statistics of every unit of the run (norm_fallback)")}
        for (rec, unit), _ in flagged.groupby([id_column, "norm_unit"], sort=False)]
    return pd.DataFrame(rows, columns=[id_column, "reason"])


def norm_values(ref: UnitReference) -> dict[str, Any]:
    """The :data:`NORM_COLUMNS` values of a recording normalised with ``ref``."""
    return {"norm_unit": ref.unit, "norm_fallback": bool(ref.fallback)}
