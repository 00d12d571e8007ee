"""Tests of ser.stats.descriptors (per-recording/segment descriptors and time bins) and
ser.stats.names (column meanings, units, axis labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ser.data import schema
from ser.stats import descriptors, names


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
    d = descriptors.recording_descriptors(w, features=["p_happy", "f0_hz"], stats=("mean", "iqr"))
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
    d = descriptors.recording_descriptors(w, features=["p_happy", "f0_hz"])
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
    d = descriptors.recording_descriptors(w, features=["energy_db"], stats=("mean",), segment_s=30.0)
    care = d[d["phase"] == "care"]
    # segments [0,30) [30,60) [60,90): the tail holds starts 60..72 -> spans 60..75 s = 15 s,
    # exactly half of 30 s -> kept; with a stricter fraction it is dropped
    assert care["segment"].tolist() == [0, 1, 2]
    assert care["n_windows"].tolist() == [10, 10, 5]
    assert care["segment_start_s"].tolist() == [0.0, 30.0, 60.0]
    strict = descriptors.recording_descriptors(w, features=["energy_db"], stats=("mean",), segment_s=30.0,
                                               min_segment_fraction=0.8)
    assert strict[strict["phase"] == "care"]["segment"].tolist() == [0, 1]
    first = w[(w["phase"] == "care") & (w["start_s"] < 30)]["energy_db"].mean()
    assert care["energy_db__mean"].iloc[0] == pytest.approx(first)


def test_natural_level_order() -> None:
    w = pd.concat([_windows().assign(caregiver=c, level=lv,
                                     recording=lambda x, c=c: c + "_" + x["phase"])
                   for c, lv in [("a", "expert"), ("b", "untrained"), ("c", "intermediate"),
                                 ("d", "beginner")]])
    d = descriptors.recording_descriptors(w, features=["p_happy"], stats=("mean",))
    assert list(dict.fromkeys(d["level"])) == list(schema.LEVELS)


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
        descriptors.recording_descriptors(_windows(), **kwargs)


def test_unknown_level_and_missing_columns() -> None:
    with pytest.raises(ValueError, match="unknown training level"):
        descriptors.recording_descriptors(_windows().assign(level="guru"), features=["p_happy"])
    with pytest.raises(ValueError, match="04_inference"):
        descriptors.recording_descriptors(_windows().drop(columns=["phase"]), features=["p_happy"])


def test_describe_columns_covers_every_column_with_units() -> None:
    d = descriptors.recording_descriptors(_windows(), features=["p_happy", "f0_hz", "energy_db"])
    doc = names.describe_columns(d).set_index("column")
    assert list(doc.index) == list(d.columns)
    assert doc.loc["f0_hz__median", "unit"] == "Hz"
    assert "voiced windows only" in doc.loc["f0_hz__median", "meaning"]
    assert doc.loc["energy_db__std", "unit"] == "dB"
    assert doc.loc["p_happy__mean", "unit"] == "probability"
    assert doc.loc["p_happy__skew", "unit"] == "unitless"
    assert doc.loc["speech_ratio", "unit"] == "fraction"
    assert (doc["meaning"] != "").all()


def test_key_descriptors_and_axis_label() -> None:
    d = descriptors.recording_descriptors(_windows(), features=["p_happy", "p_sad", "f0_hz", "energy_db"])
    assert descriptors.key_descriptors(d) == ["p_happy__mean", "p_sad__mean", "f0_hz__median",
                                    "energy_db__mean", "speech_ratio"]
    assert names.axis_label("f0_hz__median") == "F0, median (Hz)"
    assert names.axis_label("p_happy__mean") == "P(happy), mean (probability)"


@pytest.mark.parametrize("normalise", [True, False])
def test_time_binned(normalise: bool) -> None:
    w = _windows(n=20)
    b = descriptors.time_binned(w, features=["energy_db"], time_bins=4, normalise_time=normalise)
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
        descriptors.time_binned(w, features=["energy_db"], time_bins=0)


# ------------------------------------------------------------ emotion windows need speech

def test_min_speech_ratio_leaves_quiet_windows_out_of_emotion_descriptors_only() -> None:
    w = _windows(n=20)  # speech_ratio 0.75 on even windows, 0.25 on odd ones
    d = descriptors.recording_descriptors(w, features=["p_happy", "f0_hz", "energy_db"],
                                          stats=("mean", "max"), min_speech_ratio=0.5)
    one = w[w["recording"] == "p001_care"]
    row = d.set_index("recording").loc["p001_care"]
    speech = one[one["speech_ratio"] >= 0.5]
    assert row["n_emotion_windows"] == 10 and row["n_windows"] == 20
    assert row["p_happy__mean"] == pytest.approx(speech["p_happy"].mean())
    assert row["p_happy__mean"] != pytest.approx(one["p_happy"].mean())
    assert row["p_happy__max"] == pytest.approx(speech["p_happy"].max())
    assert row["energy_db__mean"] == pytest.approx(one["energy_db"].mean())  # not masked
    assert row["f0_hz__mean"] == pytest.approx(one["f0_hz"].mean())
    assert row["speech_ratio"] == pytest.approx(0.5)  # the recording's speech ratio: all windows
    every = descriptors.recording_descriptors(w, features=["p_happy"], stats=("mean",))
    assert (every["n_emotion_windows"] == 20).all()
    assert every.set_index("recording").loc["p001_care", "p_happy__mean"] == pytest.approx(
        one["p_happy"].mean())
    # no emotion feature: no count column; threshold above every window: empty, not 0
    assert "n_emotion_windows" not in descriptors.recording_descriptors(w, features=["f0_hz"]).columns
    none = descriptors.recording_descriptors(w, features=["p_happy"], stats=("mean",), min_speech_ratio=0.9)
    assert none["p_happy__mean"].isna().all() and (none["n_emotion_windows"] == 0).all()


def test_time_binned_masks_emotions_per_bin() -> None:
    w = _windows(n=20)
    b = descriptors.time_binned(w, features=["p_happy", "energy_db"], time_bins=4, min_speech_ratio=0.5)
    assert b["n_emotion_windows"].tolist() == [3, 2, 3, 2] * 2  # windows 0,2,4 | 6,8 | ...
    first = w[(w["recording"] == "p001_care") & (w["start_s"] < 15.0)]
    got = b[(b["recording"] == "p001_care") & (b["time_bin"] == 0)].iloc[0]
    assert got["p_happy"] == pytest.approx(first.loc[first["speech_ratio"] >= 0.5, "p_happy"].mean())
    assert got["energy_db"] == pytest.approx(first["energy_db"].mean())


def test_mask_and_share_of_emotion_windows() -> None:
    w = _windows(n=20)
    m = descriptors.mask_low_speech(w, min_speech_ratio=0.5)
    quiet = w["speech_ratio"] < 0.5
    assert m.loc[quiet, ["p_happy", "p_sad"]].isna().all().all()
    assert m.loc[~quiet, "p_happy"].tolist() == w.loc[~quiet, "p_happy"].tolist()
    assert m["f0_hz"].equals(w["f0_hz"]) and w["p_happy"].notna().all()  # input untouched
    assert descriptors.mask_low_speech(w, min_speech_ratio=0.0).equals(w)
    share = descriptors.emotion_window_share(w, min_speech_ratio=0.5)
    assert share[["phase", "windows", "emotion_windows"]].values.tolist() == [
        ["control", 20, 10], ["care", 20, 10]]
    assert share["share"].tolist() == pytest.approx([0.5, 0.5])
    doc = names.describe_columns(descriptors.recording_descriptors(w, features=["p_happy"], stats=("mean",),
                                                     min_speech_ratio=0.5),
                                 min_speech_ratio=0.5).set_index("column")
    assert "speech_ratio >= 0.5" in doc.loc["p_happy__mean", "meaning"]
    assert doc.loc["n_emotion_windows", "unit"] == "count"


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", float("nan")])
def test_bad_min_speech_ratio_is_named(value: object) -> None:
    with pytest.raises(ValueError, match="min_speech_ratio must be a fraction"):
        descriptors.recording_descriptors(_windows(), features=["p_happy"], min_speech_ratio=value)


def test_min_speech_ratio_needs_the_speech_ratio_column() -> None:
    w = _windows().drop(columns=["speech_ratio"])
    with pytest.raises(ValueError, match="speech_ratio column.*min_speech_ratio: 0"):
        descriptors.time_binned(w, features=["p_happy"], min_speech_ratio=0.5)
    assert len(descriptors.time_binned(w, features=["p_happy"], min_speech_ratio=0.0))


def test_load_windows_keeps_ids_as_text(tmp_path: Path) -> None:
    w = _windows(n=6).assign(caregiver="003", recording="003_care")
    w.to_csv(tmp_path / "windows.csv", index=False)
    got = descriptors.load_windows(tmp_path / "windows.csv")
    assert got["caregiver"].iloc[0] == "003" and got["recording"].iloc[0] == "003_care"
    w.to_csv(tmp_path / "descriptors.csv", index=False)
    assert descriptors.load_descriptors(tmp_path / "descriptors.csv")["caregiver"].iloc[0] == "003"
    with pytest.raises(FileNotFoundError, match="04_inference"):
        descriptors.load_windows(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="06_time_invariant"):
        descriptors.load_descriptors(tmp_path / "nope.csv")


# ------------------------------------------------ emotion windows need a confident model

def _confidence_windows(n: int = 20) -> pd.DataFrame:
    """:func:`_windows` with a model confident (top p 0.9) on windows 0, 1, 4, 5, ... and
    unsure (0.4) on windows 2, 3, 6, 7, ...; speech on even windows only."""
    w = _windows(n=n)
    i = w.groupby("recording").cumcount()
    top = np.where(i % 4 < 2, 0.9, 0.4)
    return w.assign(emotion_entropy=1.0 - top, emotion_top_p=top)


def test_one_mask_combines_speech_and_confidence() -> None:
    w = _confidence_windows()
    i = w.groupby("recording").cumcount()
    speech, confident = i % 2 == 0, i % 4 < 2
    both = descriptors.emotion_window_mask(w, min_speech_ratio=0.5, min_top_p=0.5)
    assert both.tolist() == (speech & confident).tolist()  # windows 0, 4, 8, ...
    assert descriptors.emotion_window_mask(w, min_speech_ratio=0.0, min_top_p=0.5).tolist() == \
        confident.tolist()
    assert descriptors.emotion_window_mask(w, min_speech_ratio=0.5).tolist() == speech.tolist()
    assert descriptors.emotion_window_mask(w, min_speech_ratio=0.0, min_top_p=0.0).all()
    assert descriptors.emotion_window_mask(w, min_speech_ratio=0.0, min_top_p=0.4).all()  # >=
    m = descriptors.mask_low_speech(w, min_speech_ratio=0.5, min_top_p=0.5)
    emotion = ["p_happy", "p_sad", "emotion_entropy", "emotion_top_p"]
    assert m.loc[~both, emotion].isna().all().all()
    assert m.loc[both, emotion].equals(w.loc[both, emotion])
    assert m["f0_hz"].equals(w["f0_hz"]) and m["speech_ratio"].equals(w["speech_ratio"])


def test_min_top_p_in_descriptors_and_time_bins() -> None:
    w = _confidence_windows()
    d = descriptors.recording_descriptors(
        w, features=["p_happy", "emotion_top_p", "energy_db"], stats=("mean",),
        min_speech_ratio=0.5, min_top_p=0.5).set_index("recording")
    one = w[w["recording"] == "p001_care"]
    kept = one[(one["speech_ratio"] >= 0.5) & (one["emotion_top_p"] >= 0.5)]
    row = d.loc["p001_care"]
    assert (row["n_windows"], row["n_emotion_windows"], row["n_low_confidence_windows"]) == (20, 5, 5)
    assert row["p_happy__mean"] == pytest.approx(kept["p_happy"].mean())
    assert row["emotion_top_p__mean"] == pytest.approx(0.9)  # masked like the probabilities
    assert row["energy_db__mean"] == pytest.approx(one["energy_db"].mean())  # prosody: every window
    assert "n_low_confidence_windows" not in descriptors.recording_descriptors(
        w, features=["p_happy"], min_speech_ratio=0.5).columns  # filter off: no column
    assert "n_low_confidence_windows" in descriptors.META_COLUMNS
    b = descriptors.time_binned(w, features=["p_happy"], time_bins=4, min_speech_ratio=0.5,
                                min_top_p=0.5)
    care = b[b["recording"] == "p001_care"]
    # bins of 5 windows: 0-4 | 5-9 | 10-14 | 15-19; counted 0, 4 | 8 | 12 | 16;
    # speech but unsure 2 | 6 | 10, 14 | 18
    assert care["n_emotion_windows"].tolist() == [2, 1, 1, 1]
    assert care["n_low_confidence_windows"].tolist() == [1, 1, 2, 1]
    first = one[one["start_s"] < 15.0]
    assert care["p_happy"].iloc[0] == pytest.approx(first["p_happy"].iloc[[0, 4]].mean())


def test_windows_kept_and_left_out_per_caregiver_and_phase() -> None:
    w = _confidence_windows()
    two = pd.concat([w, w.assign(caregiver="p002", level="beginner",
                                 recording=w["recording"].str.replace("p001", "p002"))],
                    ignore_index=True)
    t = descriptors.emotion_window_share(two, min_speech_ratio=0.5, min_top_p=0.5, per_caregiver=True)
    assert list(t.columns) == ["caregiver", "level", "phase", "recordings", "windows",
                               "emotion_windows", "low_speech", "low_confidence", "share"]
    assert t[["caregiver", "phase"]].values.tolist() == [  # level order, then control first
        ["p002", "control"], ["p002", "care"], ["p001", "control"], ["p001", "care"]]
    assert (t["windows"] == 20).all() and (t["emotion_windows"] == 5).all()
    assert (t["low_speech"] == 10).all() and (t["low_confidence"] == 5).all()
    assert (t["emotion_windows"] + t["low_speech"] + t["low_confidence"] == t["windows"]).all()
    assert t["share"].tolist() == pytest.approx([0.25] * 4)
    by_level = descriptors.emotion_window_share(two, min_speech_ratio=0.0, min_top_p=0.5)
    assert by_level["level"].tolist() == ["beginner", "beginner", "expert", "expert"]
    assert (by_level["low_confidence"] == 10).all() and (by_level["low_speech"] == 0).all()


def test_min_top_p_on_a_table_from_before_the_uncertainty_columns() -> None:
    w = _windows()  # no emotion_top_p: windows.csv of an earlier stage 04
    for call in (lambda: descriptors.recording_descriptors(w, features=["p_happy"], min_top_p=0.5),
                 lambda: descriptors.time_binned(w, features=["p_happy"], min_top_p=0.5),
                 lambda: descriptors.emotion_window_share(w, min_speech_ratio=0.2, min_top_p=0.5)):
        with pytest.raises(ValueError, match="min_top_p=0.5 needs the emotion_top_p column.*"
                                             "stage 04_inference.*min_top_p: 0"):
            call()
    assert len(descriptors.recording_descriptors(w, features=["p_happy"], min_top_p=0.0))


@pytest.mark.parametrize("value", [-0.1, 1.5, "sure", float("nan")])
def test_bad_min_top_p_is_named(value: object) -> None:
    with pytest.raises(ValueError, match="min_top_p must be a fraction"):
        descriptors.recording_descriptors(_confidence_windows(), features=["p_happy"], min_top_p=value)


def test_names_of_the_uncertainty_columns() -> None:
    assert names.unit_of("emotion_entropy") == "unitless"
    assert names.unit_of("emotion_top_p__mean") == "probability"
    assert names.axis_label("emotion_top_p__mean") == "top emotion probability, mean (probability)"
    assert names.pretty_name("emotion_entropy__median") == "emotion uncertainty, median"
    d = descriptors.recording_descriptors(_confidence_windows(), features=["p_happy", "emotion_entropy"],
                                          stats=("mean",), min_speech_ratio=0.5, min_top_p=0.6)
    doc = names.describe_columns(d, min_speech_ratio=0.5, min_top_p=0.6).set_index("column")
    for col in ("p_happy__mean", "emotion_entropy__mean"):
        assert "windows with speech_ratio >= 0.5 and emotion_top_p >= 0.6 only" in doc.loc[col, "meaning"]
    assert "uncertainty of the emotion (normalised entropy)" in doc.loc["emotion_entropy__mean", "meaning"]
    assert "min_top_p" in doc.loc["n_emotion_windows", "meaning"]
    assert doc.loc["n_low_confidence_windows", "unit"] == "count"
    only_conf = names.describe_columns(d, min_top_p=0.6).set_index("column")
    assert "(windows with emotion_top_p >= 0.6 only)" in only_conf.loc["p_happy__mean", "meaning"]
