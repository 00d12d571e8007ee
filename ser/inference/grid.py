"""The window grid of windowed inference: where the windows over a recording start and end.

Windows have the model's own length ``W`` (``bundle.window_samples`` at
``bundle.sample_rate``) and start every ``hop_s`` seconds: window ``k`` covers
``[k * hop_s, k * hop_s + W)``. Windows that would run past the end of the recording
are dropped, so the last ``< hop_s`` seconds may be uncovered. Timestamps are computed
in exact rational arithmetic (``hop_s`` is read as the decimal it prints as, e.g.
``0.37 = 37/100``, by :func:`exact_seconds`), so window 1000 of hop 0.37 starts at
exactly 370.0 s, never 369.99999999; the samples of a window start at
``round(start_s * sample_rate)``. The default hop (:func:`default_hop`) is half the window.

A recording shorter than one window gives exactly one window at 0 s (zero-padded by
the caller).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ser.inference.protocol import ModelBundle


def exact_seconds(x: float | Fraction | int, *, name: str) -> Fraction:
    """A float as the decimal it prints as (``0.37`` → ``37/100``); integers and
    fractions as they are.

    Raises:
        ValueError: not a number, or not finite (the message names ``name``).
    """
    if isinstance(x, (Fraction, int, np.integer)):
        return Fraction(int(x)) if not isinstance(x, Fraction) else x
    try:
        xf = float(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number of seconds; got {x!r}") from e
    if not math.isfinite(xf):
        raise ValueError(f"{name} must be finite; got {x!r}")
    return Fraction(repr(xf))


def hop_is_valid(hop_s: float | Fraction, *, window_s: float = math.inf) -> bool:
    """Whether ``hop_s`` is a finite number with ``0 < hop_s <= window_s`` (both in seconds)."""
    try:
        return math.isfinite(float(hop_s)) and 0 < float(hop_s) <= float(window_s)
    except (TypeError, ValueError):
        return False


def check_hop(hop_s: float | Fraction, *, window_s: float) -> None:
    """Raise ``ValueError`` unless ``0 < hop_s <= window_s`` (both in seconds)."""
    if not hop_is_valid(hop_s, window_s=window_s):
        raise ValueError(f"hop_s must satisfy 0 < hop_s <= window_s = {float(window_s):g} s "
                         f"(the model's window); got hop_s={hop_s!r}")


def default_hop(bundle: ModelBundle) -> float:
    """The default hop: half the model's window (s)."""
    return float(Fraction(int(bundle.window_samples), int(bundle.sample_rate)) / 2)


def _grid(duration: Fraction, window: Fraction, hop: Fraction) -> tuple[int, int, int]:
    """Number of windows and the common denominator/numerator of the hop."""
    if duration <= 0:
        raise ValueError(f"duration must be > 0 s; got {float(duration)}")
    n = 1 if duration < window else int((duration - window) // hop) + 1
    return n, hop.numerator, hop.denominator


def _ratio_seq(n: int, step: int, offset: int, den: int) -> np.ndarray:
    """float64 ``(k * step + offset) / den`` for ``k = 0..n-1``, each correctly rounded."""
    if (n * step + offset) < 2 ** 53:  # exact in float64: numpy's division rounds once
        return (np.arange(n, dtype=np.int64) * step + offset) / den
    return np.array([(k * step + offset) / den for k in range(n)], dtype=np.float64)


def _round_seq(n: int, step: int, den: int) -> np.ndarray:
    """int64 ``round(k * step / den)`` (halves up) for ``k = 0..n-1``, in exact integers."""
    if 2 * n * step + den < 2 ** 62:
        return (2 * np.arange(n, dtype=np.int64) * step + den) // (2 * den)
    return np.array([(2 * k * step + den) // (2 * den) for k in range(n)], dtype=np.int64)


def window_starts(duration_s: float, *, window_s: float, hop_s: float) -> np.ndarray:
    """Start times of the sliding windows over a recording.

    Window ``k`` starts at ``k * hop_s`` for every ``k`` with
    ``k * hop_s + window_s <= duration_s``, computed in exact rational arithmetic, so
    each start is the float nearest to the true value (no accumulated drift).
    A recording shorter than one window gives ``[0.0]`` (one zero-padded window).

    Args:
        duration_s: recording length (s, > 0).
        window_s: window length (s, > 0).
        hop_s: step between window starts (s), ``0 < hop_s <= window_s``.

    Returns:
        float64 ``(n_windows,)`` start times in seconds.

    Raises:
        ValueError: non-positive duration/window, or ``hop_s`` outside ``(0, window_s]``.

    Example:
        >>> window_starts(10.0, window_s=3.0, hop_s=1.5)
        array([0. , 1.5, 3. , 4.5, 6. ])
    """
    window = exact_seconds(window_s, name="window_s")
    if window <= 0:
        raise ValueError(f"window_s must be > 0 seconds; got {window_s!r}")
    check_hop(hop_s, window_s=float(window))
    n, num, den = _grid(exact_seconds(duration_s, name="duration_s"), window,
                        exact_seconds(hop_s, name="hop_s"))
    return _ratio_seq(n, num, 0, den)


def sample_grid(n_samples: int, *, sample_rate: int, window_samples: int,
                hop: Fraction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows over a recording of ``n_samples`` samples at ``sample_rate``.

    Args:
        n_samples: recording length in samples (> 0).
        sample_rate: Hz.
        window_samples: window length in samples.
        hop: exact step between window starts (s, see :func:`exact_seconds`).

    Returns:
        ``(start_s, end_s, start_n)``: float64 start and end times (s, each the float
        nearest to the exact value) and int64 first samples ``round(start_s * sample_rate)``.
    """
    window = Fraction(window_samples, sample_rate)
    n_win, num, den = _grid(Fraction(n_samples, sample_rate), window, hop)
    start_s = _ratio_seq(n_win, num, 0, den)
    # end = k * hop + W as one rounding: (k num W.den + W.num den) / (den W.den)
    wn, wd = window.numerator, window.denominator
    end_s = _ratio_seq(n_win, num * wd, wn * den, den * wd)
    start_n = _round_seq(n_win, num * sample_rate, den)  # first sample: round(k * hop * sr)
    return start_s, end_s, start_n
