"""The whole study on a tiny demo, end to end, in temporary folders (SpeechBrain-style
recipe test): every stage runs, the artifacts later stages and the report rely on exist,
and their contents are in range."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from ser.run import pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("SER_DATA_DIR", str(root / "data"))
    mp.setenv("SER_RESULTS_DIR", str(root / "results"))
    try:
        record = pipeline.run(profile="smoke", progress=False)
        yield root, record
    finally:
        mp.undo()


def test_every_stage_ran(smoke_run):
    _, record = smoke_run
    assert [s["status"] for s in record["stages"]] == ["ok"] * 7
    assert record["report"]


def test_model_bundle_carries_window_rate_labels(smoke_run):
    root, _ = smoke_run
    meta = json.loads((root / "results/models/demo_cnn/model.json").read_text())
    assert meta["labels"] == ["angry", "happy", "neutral", "sad"]
    assert meta["sample_rate"] == 16000 and meta["window_s"] > 0
    test_speakers = set(meta["split"]["test"])
    train_speakers = set(meta["split"]["train"])
    assert test_speakers and not test_speakers & train_speakers


def test_evaluation_metrics_in_range(smoke_run):
    root, _ = smoke_run
    m = pd.read_csv(root / "results/tables/eval_metrics.csv")
    row = m.iloc[-1]
    assert 0.0 <= row["uar"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0


def test_windows_table_contract(smoke_run):
    root, _ = smoke_run
    w = pd.read_csv(root / "results/tables/windows.csv")
    for col in ["recording", "caregiver", "level", "phase", "start_s", "end_s",
                "p_angry", "p_happy", "p_neutral", "p_sad", "f0_hz", "energy_db", "speech_ratio"]:
        assert col in w.columns, col
    assert w["caregiver"].nunique() == 23
    assert set(w["phase"]) == {"control", "care"}
    p = w[["p_angry", "p_happy", "p_neutral", "p_sad"]].sum(axis=1)
    assert (abs(p - 1) < 1e-4).all()
    assert w["speech_ratio"].between(0, 1).all()
    cols = list(w.columns)
    assert cols[cols.index("p_sad") + 1:cols.index("p_sad") + 3] == ["emotion_entropy", "emotion_top_p"]
    assert w["emotion_entropy"].between(0, 1).all() and w["emotion_top_p"].between(0.25 - 1e-6, 1).all()
    f0 = w["f0_hz"].dropna()
    assert len(f0) > 0.5 * len(w) and f0.between(60, 600).all()
    meta = json.loads((root / "results/models/demo_cnn/model.json").read_text())
    assert ((w["end_s"] - w["start_s"]) - meta["window_s"]).abs().max() < 1e-6


def test_caregiver_speech_attributed_as_in_the_cohort_profile(smoke_run):
    """Stage 04 ran as the cohort profile does (speaker: caregiver, CAM++, two speakers): her
    voice identified in nearly every recording, each window's speech split between her and others."""
    root, _ = smoke_run
    summary = pd.read_csv(root / "results/tables/speakers.summary.csv")
    assert len(summary) == 46 and (summary["caregiver_status"] == "ok").mean() >= 0.9
    assert summary.loc[summary["caregiver_status"] == "ok", "speakers"].eq(2).all()
    w = pd.read_csv(root / "results/tables/windows.csv")
    share = w["caregiver_share"].dropna()
    assert len(share) > 0.5 * len(w) and share.between(0, 1).all() and 0.5 < share.mean() < 1
    assert set(w["recording"]) <= set(summary.loc[summary["caregiver_status"] == "ok", "recording"])


def test_mixed_models_table_contract(smoke_run):
    root, _ = smoke_run
    mm = pd.read_csv(root / "results/tables/mixed_models.csv")
    for col in ["feature", "term", "estimate", "ci_low", "ci_high", "p", "p_fdr",
                "n_caregivers", "n_obs", "converged"]:
        assert col in mm.columns, col
    assert set(mm["analysis"]) == {"time_dependent", "time_invariant", "delta"}
    tested = mm.dropna(subset=["p"])
    assert len(tested) > 0 and tested["p"].between(0, 1).all()
    assert tested["p_fdr"].dropna().between(0, 1).all()
    single_df = tested[tested["term"].str.contains(r"\[|_trend", regex=True)]
    assert len(single_df) > 0 and not any(math.isnan(x) for x in single_df["estimate"])
    assert {"phase", "level"} <= {t.split("[")[0].split("_")[0] for t in tested["term"]}


def test_provenance_for_every_stage(smoke_run):
    root, record = smoke_run
    for s in record["stages"]:
        prov = json.loads((root / "results/provenance" / f"{s['stage']}.json").read_text())
        assert prov["params"] and prov["packages"]["torch"] and prov["inputs"]["combined"]


def test_site_rendered_without_identifiers(smoke_run):
    root, _ = smoke_run
    site = root / "results/site"
    assert (site / "index.html").is_file() and (site / "report.html").is_file()
    manifest = pd.read_csv(root / "data/demo/cohort/manifest.csv")
    from ser.report import privacy

    assert privacy.scan_for_identifiers(site, manifest) == []
