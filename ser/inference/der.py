"""Diarization error rate (DER) of speaker turns against a reference, with a collar.

Frame-based at ``step_s`` (10 ms): each frame has the reference speakers (several where
they overlap) and the hypothesis speakers. Hypothesis speakers are mapped one-to-one to
reference speakers to maximise the overlapping time (Hungarian assignment). Per frame,
with ``R`` reference and ``H`` hypothesis speakers and ``C`` correctly mapped ones:
missed speech ``max(0, R - H)``, false alarm ``max(0, H - R)``, confusion
``min(R, H) - C``; DER is their sum over all frames divided by the sum of ``R``. Frames
within ``collar_s`` of a reference turn boundary are not scored (NIST md-eval's collar).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _matrix(turns: Iterable[tuple[float, float, str]], n: int, step_s: float) -> tuple[np.ndarray, list[str]]:
    turns = list(turns)
    names = sorted({str(s) for _, _, s in turns})
    m = np.zeros((n, len(names)), dtype=bool)
    for a, b, s in turns:
        ia, ib = int(round(a / step_s)), int(round(b / step_s))
        m[max(ia, 0):min(ib, n), names.index(str(s))] = True
    return m, names


def diarization_error(
    reference: Iterable[tuple[float, float, str]],
    hypothesis: Iterable[tuple[float, float, str]],
    *,
    duration_s: float,
    collar_s: float = 0.25,
    step_s: float = 0.01,
) -> dict[str, float]:
    """DER and its parts for one recording.

    Args:
        reference: ``(start_s, end_s, speaker)`` true turns (may overlap).
        hypothesis: ``(start_s, end_s, speaker)`` hypothesised turns.
        duration_s: recording length (s).
        collar_s: unscored time on each side of every reference boundary (s).
        step_s: frame step (s).

    Returns:
        ``{"der", "missed", "false_alarm", "confusion", "scored_s"}``: the rates are
        fractions of scored reference speech (NaN when there is none); ``scored_s`` is that
        speech time (s).
    """
    from scipy.optimize import linear_sum_assignment

    reference, hypothesis = list(reference), list(hypothesis)
    n = int(np.ceil(duration_s / step_s))
    ref, _ = _matrix(reference, n, step_s)
    hyp, _ = _matrix(hypothesis, n, step_s)
    scored = np.ones(n, dtype=bool)
    c = int(round(collar_s / step_s))
    for a, b, _s in reference:
        for t in (a, b):
            i = int(round(t / step_s))
            scored[max(i - c, 0):min(i + c, n)] = False
    ref, hyp = ref[scored], hyp[scored]
    nr, nh = ref.sum(1), hyp.sum(1)
    correct = np.zeros(len(ref))
    if ref.shape[1] and hyp.shape[1]:
        overlap = ref.T.astype(np.float64) @ hyp.astype(np.float64)
        ri, hi = linear_sum_assignment(-overlap)
        correct = (ref[:, ri] & hyp[:, hi]).sum(1)
    total = float(nr.sum())
    miss = float(np.maximum(nr - nh, 0).sum())
    fa = float(np.maximum(nh - nr, 0).sum())
    conf = float((np.minimum(nr, nh) - correct).sum())
    rate = (lambda x: x / total) if total else (lambda x: float("nan"))
    return {"der": rate(miss + fa + conf), "missed": rate(miss), "false_alarm": rate(fa),
            "confusion": rate(conf), "scored_s": total * step_s}
