"""The study's vocabulary, defined once: training levels, phases, id columns, table columns.

Every stage imports these names instead of retyping them (librosa keeps its shared types
in one ``_typing.py`` the same way). They describe the Humanitude cohort: caregivers at
four levels of training, each recorded in a control phase and a care phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: Humanitude training levels, in their natural order (least to most trained).
LEVELS: tuple[str, ...] = ("untrained", "beginner", "intermediate", "expert")
#: Phases of each caregiver's session: the control phase, then the care phase.
PHASES: tuple[str, ...] = ("control", "care")
#: Position of each level in :data:`LEVELS` (0 = untrained): the score of the level trend.
LEVEL_INDEX: Mapping[str, int] = MappingProxyType({lv: i for i, lv in enumerate(LEVELS)})
#: Position of each phase in :data:`PHASES` (0 = control).
PHASE_INDEX: Mapping[str, int] = MappingProxyType({ph: i for i, ph in enumerate(PHASES)})

#: Identifier columns that lead every per-window and per-recording table.
ID_COLUMNS: tuple[str, ...] = ("recording", "caregiver", "level", "phase")
#: Per-window uncertainty of the emotion probabilities, the columns that follow the
#: ``p_<label>`` columns of ``windows.csv`` (stage 04): the Shannon entropy of the window's
#: probability vector normalised by log(number of labels) (0: one label has probability 1;
#: 1: every label equally likely), and the largest probability (1/number of labels to 1).
UNCERTAINTY_COLUMNS: tuple[str, ...] = ("emotion_entropy", "emotion_top_p")
#: Columns a recordings manifest must have (``path`` relative to the manifest's folder).
MANIFEST_COLUMNS: tuple[str, ...] = ("recording", "caregiver", "level", "phase", "session", "path")
#: Optional manifest columns, carried into ``recordings.csv`` when present (empty cells allowed):
#: ``enrolment_path``, a clip of that row's caregiver alone (relative to the manifest; the
#: diarization names her voice by it), and ``speakers``, how many people speak in the recording
#: (a whole number >= 1; it fixes the diarization's speaker count for that recording, e.g. 1
#: where she is alone).
OPTIONAL_MANIFEST_COLUMNS: tuple[str, ...] = ("enrolment_path", "speakers")
#: Columns of ``recordings.csv`` (stage 01), followed by those of
#: :data:`OPTIONAL_MANIFEST_COLUMNS` the manifest has.
RECORDING_COLUMNS: tuple[str, ...] = MANIFEST_COLUMNS + ("duration_s", "sample_rate")
#: Columns of every problem-data table (what was wrong, where, and what was done).
PROBLEM_COLUMNS: tuple[str, ...] = ("analysis", "problem", "where", "action", "detail")
#: Columns that hold identifiers or names and stay text when a table is read back
#: (speaker "03" must not become the number 3).
TEXT_COLUMNS: tuple[str, ...] = (
    "corpus", "speaker", "gender", "emotion", "label", "text", "intensity", "split",
    "recording", "caregiver", "level", "phase", "session", "dropped_reason", "reason", "source",
    "language", "enrolment_path",
)
