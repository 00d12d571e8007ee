"""Tests of ser.descriptors: per-recording/segment descriptors and time bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ser import descriptors as D


def _windows(n: int = 20, *, hop: float = 3.0, f0_nan: tuple[int, ...] = (1, 4)) -> pd.DataFrame:
    """Two recordings of one caregiver with known values."""
    rows = []
    rng = np.random.default_rng(0)
    for phase in ("care", "control"):  # deliberately not in natural order
        p_happy = rng.uniform(0, 1, n)
        f0 = rng.normal(200, 20, n)
        f0[list(f0_nan)] = np.nan
        for i in range(n):
            rows.append({"recording": f"p001_{phase}", "caregiver": "p001", "level": "expert",
                         "phase": phase, "start_s": i * hop, "end_s": i * hop + 3.0,
                         "p_happy": p_happy[i], "p_sad": 1 - p_happy[i], "f0_hz": f0[i],
                         "energy_db": -30 + i * 0.1, "voiced_ratio": 0.5,
                         "speech_ratio": 0.25 if i % 2 else 0.75})
    return pd.DataFrame(rows)


def test_one_row_per_recording_with_named_columns() -> None:
    w = _windows()
    d = D.recording_descriptors(w, features=["p_happy", "f0_hz"], stats=("mean", "iqr"))
    assert list(d["recording"]) == ["p001_control", "p001_care"]  # control first
    for col in ("p_happy__mean", "p_happy__iqr", "f0_hz__mean", "f0_hz__iqr", "segment",
                "n_windows", "n_voiced_windows", "voiced_windows_ratio", "voiced_ratio",
                "speech_ratio"):
        assert col in d.columns
    assert (d["n_windows"] == 20).all()
    assert (d["n_voiced_windows"] == 18).all()
    assert d["speech_ratio"].tolist() == pytest.approx([0.5, 0.5])


def test_stats_match_numpy_and_f0_uses_voiced_windows_only() -> None:
    w = _windows()
    d = D.recording_descriptors(w, features=["p_happy", "f0_hz"])
    one = w[w["recording"] == "p001_care"]
    row = d.set_index("recording").loc["p001_care"]
    f0 = one["f0_hz"].dropna().to_numpy()
    x = one["p_happy"].to_numpy()
    assert row["f0_hz__mean"] == pytest.approx(f0.mean())
    assert row["f0_hz__median"] == pytest.approx(np.median(f0))
    assert row["f0_hz__std"] == pytest.approx(f0.std(ddof=1))
    assert row["p_happy__iqr"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
    assert row["p_happy__min"] == pytest.approx(x.min())
    assert row["p_happy__max"] == pytest.approx(x.max())
    assert row["p_happy__skew"] == pytest.approx(st.skew(x, bias=False))
    assert row["p_happy__kurtosis"] == pytest.approx(st.kurtosis(x, bias=False))


def test_segments_assign_windows_by_start_and_drop_short_tail() -> None:
    w = _windows(n=25)  # windows start 0..72 s, end 75 s
    d = D.recording_descriptors(w, features=["energy_db"], stats=("mean",), segment_s=30.0)
    care = d[d["phase"] == "care"]
    # segments [0,30) [30,60) [60,90): the tail holds starts 60..72 -> spans 60..75 s = 15 s,
    # exactly half of 30 s -> kept; with a stricter fraction it is dropped
    assert care["segment"].tolist() == [0, 1, 2]
    assert care["n_windows"].tolist() == [10, 10, 5]
    assert care["segment_start_s"].tolist() == [0.0, 30.0, 60.0]
    strict = D.recording_descriptors(w, features=["energy_db"], stats=("mean",), segment_s=30.0,
                                     min_segment_fraction=0.8)
    assert strict[strict["phase"] == "care"]["segment"].tolist() == [0, 1]
    first = w[(w["phase"] == "care") & (w["start_s"] < 30)]["energy_db"].mean()
    assert care["energy_db__mean"].iloc[0] == pytest.approx(first)


def test_natural_level_order() -> None:
    w = pd.concat([_windows().assign(caregiver=c, level=lv,
                                     recording=lambda x, c=c: c + "_" + x["phase"])
                   for c, lv in [("a", "expert"), ("b", "untrained"), ("c", "intermediate"),
                                 ("d", "beginner")]])
    d = D.recording_descriptors(w, features=["p_happy"], stats=("mean",))
    assert list(dict.fromkeys(d["level"])) == list(D.LEVELS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": ["p_angry"]}, "does not have"),
        ({"features": []}, "'features' is empty"),
        ({"features": ["p_happy"], "stats": ("mode",)}, "unknown stats"),
        ({"features": ["p_happy"], "segment_s": -5.0}, "segment_s"),
    ],
)
def test_bad_options_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        D.recording_descriptors(_windows(), **kwargs)


def test_unknown_level_and_missing_columns() -> None:
    with pytest.raises(ValueError, match="unknown training level"):
        D.recording_descriptors(_windows().assign(level="guru"), features=["p_happy"])
    with pytest.raises(ValueError, match="04_inference"):
        D.recording_descriptors(_windows().drop(columns=["phase"]), features=["p_happy"])


def test_describe_columns_covers_every_column_with_units() -> None:
    d = D.recording_descriptors(_windows(), features=["p_happy", "f0_hz", "energy_db"])
    doc = D.describe_columns(d).set_index("column")
    assert list(doc.index) == list(d.columns)
    assert doc.loc["f0_hz__median", "unit"] == "Hz"
    assert "voiced windows only" in doc.loc["f0_hz__median", "meaning"]
    assert doc.loc["energy_db__std", "unit"] == "dB"
    assert doc.loc["p_happy__mean", "unit"] == "probability"
    assert doc.loc["p_happy__skew", "unit"] == "unitless"
    assert doc.loc["speech_ratio", "unit"] == "fraction"
    assert (doc["meaning"] != "").all()


def test_key_descriptors_and_axis_label() -> None:
    d = D.recording_descriptors(_windows(), features=["p_happy", "p_sad", "f0_hz", "energy_db"])
    assert D.key_descriptors(d) == ["p_happy__mean", "p_sad__mean", "f0_hz__median",
                                    "energy_db__mean", "speech_ratio"]
    assert D.axis_label("f0_hz__median") == "F0, median (Hz)"
    assert D.axis_label("p_happy__mean") == "P(happy), mean (probability)"


@pytest.mark.parametrize("normalise", [True, False])
def test_time_binned(normalise: bool) -> None:
    w = _windows(n=20)
    b = D.time_binned(w, features=["energy_db"], time_bins=4, normalise_time=normalise)
    assert set(b["time_bin"]) == {0, 1, 2, 3}
    assert b.groupby("recording")["n_windows"].sum().tolist() == [20, 20]
    per = b[b["recording"] == "p001_care"].sort_values("time_bin")
    assert per["energy_db"].is_monotonic_increasing  # energy rises with time in the fixture
    if normalise:
        assert per["time"].tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])
        assert (b["time_unit"] == "fraction of recording").all()
    else:
        # 60 s recordings, 4 bins of 15 s: centres 7.5, 22.5, 37.5, 52.5 s in minutes
        assert per["time"].tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])
        assert (b["time_unit"] == "min").all()
    with pytest.raises(ValueError, match="time_bins"):
        D.time_binned(w, features=["energy_db"], time_bins=0)
