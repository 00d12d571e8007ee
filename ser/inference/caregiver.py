"""Which diarized speaker is the caregiver: matched across her recordings, or to an enrolment clip.

Each recording's speakers have unit centroid embeddings
(:class:`ser.inference.diarization.RecordingDiarization`). A caregiver's recordings
(control and care) share her voice:

- **Shared speaker** (default): in each recording, a speaker is a candidate when in every
  other recording of the same caregiver some speaker's centroid has cosine similarity at
  least ``min_similarity`` with it. The patient may be shared too, so among candidates the
  one with the most speech in the recording is the caregiver (she is the main speaker of
  a care recording), provided she has at least ``min_speech_ratio`` times the speech of
  the next candidate; otherwise the recording is ``ambiguous``.
- **Enrolment clip** (``enrolment``: a centroid per caregiver, e.g. from a clip named in
  the manifest): the speaker most similar to it, if the similarity is at least
  ``min_similarity`` and exceeds the next speaker's by ``min_margin``.

A recording without such a match gets status ``no_match``, ``ambiguous``,
``single_recording`` (no other recording of the caregiver and no clip) or
``no_speakers``, and no caregiver: nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: Columns of :func:`identify_caregivers`.
CAREGIVER_COLUMNS: tuple[str, ...] = ("recording", "caregiver", "speaker", "similarity", "method",
                                      "status", "reason")
#: Default least cosine similarity of two centroids of the same voice.
MIN_SIMILARITY: float = 0.85


def identify_caregivers(
    centroids: Mapping[str, Mapping[str, np.ndarray]],
    speech_s: Mapping[str, Mapping[str, float]],
    caregiver_of: Mapping[str, str],
    *,
    enrolment: Mapping[str, np.ndarray] | None = None,
    min_similarity: float = MIN_SIMILARITY,
    min_margin: float = 0.05,
    min_speech_ratio: float = 1.5,
) -> pd.DataFrame:
    """The caregiver's speaker in each recording (see the module docstring).

    Args:
        centroids: ``{recording: {speaker: unit embedding}}``.
        speech_s: ``{recording: {speaker: speech seconds}}``.
        caregiver_of: ``{recording: caregiver id}`` for every recording of ``centroids``.
        enrolment: ``{caregiver id: unit embedding of her enrolment clip}`` (optional;
            used for the caregivers it names).
        min_similarity: least cosine similarity of a match.
        min_margin: least similarity lead over the next speaker (enrolment).
        min_speech_ratio: least speech ratio over the next shared candidate.

    Returns:
        :data:`CAREGIVER_COLUMNS`, one row per recording (``speaker`` and ``similarity``
        empty unless ``status == "ok"``).

    Raises:
        ValueError: a recording without a caregiver in ``caregiver_of``.
    """
    missing = [r for r in centroids if r not in caregiver_of]
    if missing:
        raise ValueError(f"no caregiver given for recording(s) {missing[:5]}")
    enrolment = enrolment or {}
    rows = []
    by_cg: dict[str, list[str]] = {}
    for rec in centroids:
        by_cg.setdefault(caregiver_of[rec], []).append(rec)
    for cg, recs in by_cg.items():
        for rec in recs:
            spk = list(centroids[rec])
            row = {"recording": rec, "caregiver": cg, "speaker": None, "similarity": np.nan,
                   "method": "enrolment" if cg in enrolment else "shared", "status": "ok", "reason": ""}
            rows.append(row)
            if not spk:
                row.update(status="no_speakers", reason="no speaker found in the recording")
                continue
            c = np.stack([centroids[rec][s] for s in spk])
            if cg in enrolment:
                sim = c @ np.asarray(enrolment[cg], dtype=np.float64)
                order = np.argsort(-sim)
                best = float(sim[order[0]])
                second = float(sim[order[1]]) if len(order) > 1 else -1.0
                if best < min_similarity:
                    row.update(status="no_match", reason=f"no speaker matches the enrolment clip "
                                                         f"(best cosine {best:.2f} < {min_similarity:g})")
                elif best - second < min_margin:
                    row.update(status="ambiguous", reason=f"two speakers match the enrolment clip "
                                                          f"({best:.2f} vs {second:.2f})")
                else:
                    row.update(speaker=spk[order[0]], similarity=best)
                continue
            others = [r for r in recs if r != rec and centroids[r]]
            if not others:
                row.update(status="single_recording",
                           reason="no other recording of this caregiver with speakers and no enrolment clip")
                continue
            # each speaker's worst best-match over the caregiver's other recordings
            match = np.min([np.max(c @ np.stack(list(centroids[r].values())).T, axis=1) for r in others],
                           axis=0)
            cand = [i for i in range(len(spk)) if match[i] >= min_similarity]
            if not cand:
                row.update(status="no_match",
                           reason=f"no speaker recurs in the caregiver's other recordings (best cosine "
                                  f"{float(match.max()):.2f} < {min_similarity:g})")
                continue
            cand.sort(key=lambda i: -speech_s[rec].get(spk[i], 0.0))
            if len(cand) > 1:
                a, b = (speech_s[rec].get(spk[i], 0.0) for i in cand[:2])
                if a < min_speech_ratio * b:
                    row.update(status="ambiguous",
                               reason=f"speakers {spk[cand[0]]} and {spk[cand[1]]} both recur and speak "
                                      f"about as long ({a:.0f} s vs {b:.0f} s)")
                    continue
            row.update(speaker=spk[cand[0]], similarity=float(match[cand[0]]))
    return pd.DataFrame(rows, columns=list(CAREGIVER_COLUMNS))


def mark_caregiver(segments: pd.DataFrame, identified: pd.DataFrame) -> pd.DataFrame:
    """``segments`` (with ``recording, speaker``) with ``is_caregiver`` set from ``identified``:
    True/False where the recording's caregiver was identified, empty (NA) where not."""
    ok = identified[identified["status"] == "ok"].set_index("recording")["speaker"]
    out = segments.copy()
    cg = out["recording"].map(ok)
    out["is_caregiver"] = pd.array(np.where(cg.isna(), None, out["speaker"] == cg), dtype="boolean")
    return out
