"""The options of a windowed-inference run (:class:`InferenceOptions`), checked once.

Every entry point (:func:`ser.inference.recording.predict_recording`,
:func:`ser.inference.table.predict_table`, :func:`ser.inference.files.predict_paths`,
:func:`ser.inference.files.predict_cli`) takes one :class:`InferenceOptions` and runs on
``options.resolve(bundle)``: the options checked against the model, with the hop as an
exact fraction (:func:`ser.inference.grid.exact_seconds`) from then on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from ser.inference import grid
from ser.inference.protocol import ModelBundle, needs_reference
from ser.inference.speakers import check_speaker_mode
from ser.inference.workers import resolve_workers
from ser.signal import features, vad

#: Audio analysed at once (s): bounds memory, and is Praat's silence-threshold span.
BLOCK_S: float = 120.0
#: Speaker-normalisation units (:attr:`InferenceOptions.norm_unit`).
NORM_UNITS: tuple[str, ...] = ("caregiver", "recording", "none")


def resolve_batch_size(bundle: ModelBundle, batch_size: int | None) -> int:
    """``batch_size``, or for ``None`` the bundle's ``preferred_batch_size``.

    Raises:
        ValueError: not a positive integer (or None).
    """
    if batch_size is None:
        return int(bundle.preferred_batch_size)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive integer (or None: the model's "
                         f"preferred size); got {batch_size!r}")
    return int(batch_size)


@dataclass(frozen=True)
class InferenceOptions:
    """How windows are cut, batched and described: the options every entry point shares.

    Build it with the user's values; :meth:`resolve` checks them against a model bundle
    and returns the options a run uses, where ``hop_s`` is the exact hop (a
    :class:`~fractions.Fraction`: ``0.37`` is read as ``37/100``) and ``batch_size`` and
    ``workers`` are numbers. Outputs derive their float ``hop_s`` from that fraction.

    Attributes:
        hop_s: step between window starts (s), ``0 < hop_s <= bundle.window_s``;
            ``None``: half the window (:func:`ser.inference.grid.default_hop`).
        batch_size: windows per forward pass (``None``: the model's preferred size,
            see :func:`resolve_batch_size`).
        block_s: audio processed at once (s); bounds memory (see :mod:`ser.inference.recording`).
        f0_method: ``"praat"`` or ``"pyin"`` (see :func:`ser.signal.features.f0_track`).
        voice_quality: add ``jitter_local, shimmer_local, hnr_db`` per window.
        egemaps: add openSMILE eGeMAPS descriptor means (``egemaps_<descriptor>_mean``)
            per window.
        workers: processes computing the features while the model runs (0: none,
            ``None`` or -1: one per CPU core, see :func:`ser.inference.workers.resolve_workers`);
            does not change the result.
        norm_unit: whose audio gives the speaker reference of a bundle trained with
            ``speaker_norm`` (:mod:`ser.inference.speaker_norm`): ``"caregiver"`` (all
            recordings of the person, pooled over both phases; the person is the
            ``caregiver`` column in stage 04, the ``--speaker-of`` mapping in ``ser predict``),
            ``"recording"`` (each recording alone) or ``"none"`` (refused for such a
            bundle). Other bundles ignore it.
        pad_short: a recording shorter than the model's window gets one zero-padded
            window (``padded`` True) instead of being refused as too short
            (:class:`ser.inference.recording.TooShortError`).
        speaker: whose speech the model and the prosody hear: ``"all"`` (the audio as
            recorded) or ``"caregiver"`` (other speakers' turns silenced, see
            :mod:`ser.inference.speakers`; needs speaker turns).
        vad: detector of the ``speech_ratio`` column: ``"webrtc"`` (webrtcvad, 30 ms
            frames) or ``"silero"`` (Silero VAD, 32 ms frames, :mod:`ser.signal.vad`).
    """

    hop_s: float | Fraction | None = None
    batch_size: int | None = None
    block_s: float = BLOCK_S
    f0_method: str = "praat"
    voice_quality: bool = False
    egemaps: bool = False
    workers: int | None = 0
    norm_unit: str = "caregiver"
    pad_short: bool = False
    speaker: str = "all"
    vad: str = "webrtc"

    def resolve(self, bundle: ModelBundle) -> InferenceOptions:
        """These options checked for ``bundle``: the exact hop (the default one when
        ``hop_s`` is None), the batch size and the number of feature workers.

        Resolving resolved options gives equal options.

        Raises:
            ValueError: bad ``hop_s``, ``batch_size``, ``block_s``, ``f0_method``,
                ``voice_quality``, ``egemaps``, ``pad_short``, ``workers``, ``norm_unit``,
                ``speaker`` or ``vad``, or
                ``norm_unit="none"`` for a bundle that needs a speaker reference.
        """
        hop = grid.default_hop(bundle) if self.hop_s is None else self.hop_s
        grid.check_hop(hop, window_s=bundle.window_samples / bundle.sample_rate)
        batch_size = resolve_batch_size(bundle, self.batch_size)
        if not (isinstance(self.block_s, (int, float)) and self.block_s > 0):
            raise ValueError(f"block_s must be > 0 seconds; got {self.block_s!r}")
        if self.f0_method not in features.F0_METHODS:
            raise ValueError(f"f0_method must be one of {features.F0_METHODS}; got {self.f0_method!r}")
        for name, v in (("voice_quality", self.voice_quality), ("egemaps", self.egemaps),
                        ("pad_short", self.pad_short)):
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False; got {v!r}")
        if self.norm_unit not in NORM_UNITS:
            raise ValueError(f"norm_unit must be one of {NORM_UNITS}; got {self.norm_unit!r}")
        check_speaker_mode(self.speaker)
        vad.check_method(self.vad)
        if self.norm_unit == "none" and needs_reference(bundle):
            raise ValueError(f"model {bundle.path} was trained with speaker_norm and needs a "
                             "speaker reference: norm_unit 'none' gives it none; use 'caregiver' "
                             "(all recordings of the person) or 'recording'")
        n_workers = resolve_workers(self.workers, heavy_model=bundle.heavy)
        return replace(self, hop_s=grid.exact_seconds(hop, name="hop_s"), batch_size=batch_size,
                       voice_quality=bool(self.voice_quality), egemaps=bool(self.egemaps),
                       pad_short=bool(self.pad_short), workers=n_workers)

    def feature_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`ser.signal.features.window_features` for these options."""
        return {"f0_method": self.f0_method, "voice_quality": bool(self.voice_quality),
                "egemaps": bool(self.egemaps)}
