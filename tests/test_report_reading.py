"""The report as a clinician reads it (issue 18, items 1-6): no developer notice, a
plain-language summary, human names with units, readable notebook pages and maths, and a
model report for a run that studied no cohort.

Built on the small fake run of ``test_report.build_results``.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from test_report import build_results  # tests/ is on sys.path under pytest

from ser.report import findings, names, privacy, readable, render, sections


def _text(page: str) -> str:
    """Visible text of a page (tags, styles and the analysts' glossary removed)."""
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r'<div class="ser-for-analysts">.*?</div>', " ", page, flags=re.S)
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


def _with_evaluation(res: Path) -> Path:
    tables = res / "tables"
    pd.DataFrame([{"model_name": "cnn_small", "uar": 0.61, "macro_f1": 0.6, "accuracy": 0.62,
                   "temperature": 1.4, "ece_before": 0.2, "ece_after": 0.08}]
                 ).to_csv(tables / "eval_metrics.csv", index=False)
    pd.DataFrame({"held_out_corpus": ["emodb", "emovo"], "uar": [0.40, 0.50]}
                 ).to_csv(tables / "cross_corpus.csv", index=False)
    return res


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = _with_evaluation(build_results(tmp_path_factory.mktemp("run")))
    return render.render_site(results_dir=res, use_quarto=False).parent


# ------------------------------------------------------------------ 1 developer notice


def test_render_notice_is_small_print_in_run_status_only(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "ser-banner" not in text and "Fallback rendering." not in text, page
    index = (site / "index.html").read_text(encoding="utf-8")
    status = index.split('id="run-status"')[1]
    assert re.search(r"<small>Rendered without Quarto: " + re.escape(render.FALLBACK_NOTICE),
                     status)
    before = index.split('id="run-status"')[0].split("</footer>")[0]
    assert render.FALLBACK_NOTICE not in before.split("<main")[1]  # not in the page body
    assert sections.RENDER_NOTE not in index


def test_quarto_pages_say_quarto_in_small_print(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from test_report import _fake_quarto

    res = build_results(tmp_path)
    monkeypatch.setattr(render, "find_quarto", lambda: _fake_quarto(tmp_path, fail=False))
    render.render_site(results_dir=res)
    for staged in (res / "report" / "quarto" / "index.qmd",
                   res / "report" / "quarto_single" / "report.qmd"):
        text = staged.read_text(encoding="utf-8")
        assert '<p class="ser-render-note"><small>Rendered with Quarto.</small></p>' in text
        assert sections.RENDER_NOTE not in text and "nbconvert" not in text


# ---------------------------------------------------------------- 2 plain summary


def test_findings_open_with_a_plain_language_summary(site: Path) -> None:
    text = _text((site / "index.html").read_text(encoding="utf-8"))
    summary = text.split("Summary", 1)[1].split("Study question")[0]
    assert summary.index("Demonstration data") < summary.index("What differed")
    assert ("Window-mean pitch was 12.5 Hz higher in care than in control "
            "(95 % CI 4.1 to 20.9 Hz; adjusted p 0.012)") in summary
    assert "No clear difference, in any analysis, was found for: share of time speaking" in summary
    assert "unweighted average recall" in summary and "0.61" in summary
    assert "guessing would score 0.25 with 4 emotions" in summary
    assert "UAR of 0.45" in summary and "2 corpora" in summary  # mean of the two held out
    assert "Calibration error" in summary and "0.080" in summary
    assert "What this means for trust" in summary and "often wrong" in summary


@pytest.mark.parametrize("row, expected", [
    (dict(feature="speech_ratio", term="phase[care]", estimate=0.052, ci_low=0.01,
          ci_high=0.094, p_fdr=0.0004, analysis="time_invariant"),
     "Share of time speaking was 5.2 percentage points higher in care than in control "
     "(95 % CI 1 to 9.4 percentage points; adjusted p < 0.001)."),
    (dict(feature="energy_db__mean", term="level_trend", estimate=-1.5, ci_low=-2.5,
          ci_high=-0.5, p_fdr=0.03, analysis="time_invariant"),
     "Mean loudness was 1.5 dB lower per step of training level (95 % CI -2.5 to -0.5 dB; "
     "adjusted p 0.030)."),
    (dict(feature="p_happy__mean", term="phase[care]:level_trend", estimate=0.04,
          ci_low=0.01, ci_high=0.07, p_fdr=0.02, analysis="time_invariant"),
     "The difference in probability of happy speech (mean over windows) between care and "
     "control was 0.04 larger per step of training level (95 % CI 0.01 to 0.07; adjusted p "
     "0.020)."),
])
def test_effect_sentence(row: dict, expected: str) -> None:
    assert findings.effect_sentence(row) == expected


def test_summary_without_evaluation_says_so() -> None:
    text = findings.recognition_summary(None, n_labels=4)
    assert "not evaluated in this run" in text


# -------------------------------------------------------------- 3 names and units


@pytest.mark.parametrize("code, shown", [
    ("speech_ratio", "share of time speaking (%)"), ("energy_db__mean", "mean loudness (dB)"),
    ("f0_hz__median", "median pitch (Hz)"),
    ("p_happy__mean", "probability of happy speech (mean over windows)"),
    ("d_arousal__mean", "arousal (mean over windows) (model scale 0-1)"),
])
def test_display_names(code: str, shown: str) -> None:
    assert names.display_name(code) == shown


@pytest.mark.parametrize("term, shown", [
    ("phase[care]", "care vs. control"), ("level_trend", "per step of training level"),
    ("phase[care]:level_trend", "care vs. control, per step of training level"),
    ("level[expert]", "expert vs. untrained"),
])
def test_term_names(term: str, shown: str) -> None:
    assert names.term_name(term) == shown


def test_effects_grouped_by_analysis_with_their_question() -> None:
    row = dict(feature="speech_ratio", model="level_trend", term="phase[care]", estimate=0.05,
               ci_low=0.01, ci_high=0.09, p=0.001, p_fdr=0.004, n_caregivers=23, n_obs=46,
               converged=True, note="")
    table = pd.DataFrame([{**row, "analysis": "delta", "term": "level_trend"},
                          {**row, "analysis": "time_invariant"},
                          {**row, "analysis": "time_dependent", "p_fdr": 0.2}])
    md = sections.mixed_models_markdown(table)
    heads = re.findall(r"^#### (.+)$", md, flags=re.M)
    assert heads == ["Whole recordings", "Along the session", "Change from control to care"]
    for _, question in names.ANALYSES.values():
        assert f"*{question}*" in md
    assert "| share of time speaking (%) | care vs. control" in md
    assert "| 5 [1, 9] |" in md  # fractions shown in %, unit said once (in the measure)
    assert names.code_names_in(md) == []


def test_no_code_name_visible_and_glossary_maps_back(site: Path) -> None:
    for page in ("index.html", "report.html"):
        raw = (site / page).read_text(encoding="utf-8")
        assert names.code_names_in(_text(raw)) == [], page
        glossary = raw.split('<div class="ser-for-analysts">')[1].split("</div>")[0]
        assert re.search(r"<td>window-mean pitch \(Hz\)</td>\s*<td><code>f0_mean_hz</code>",
                         glossary)
        assert re.search(r"<td>care vs. control</td>\s*<td><code>phase\[care\]</code>", glossary)
        shown = _text(raw)
        assert not re.search(r"results/|benchmarks/|provenance/", shown), page  # files a reader lacks


# --------------------------------------------------------- 5 notebook pages, maths


def test_progress_on_stderr_reads_as_plain_text(tmp_path: Path) -> None:
    res = build_results(tmp_path)
    path = res / "notebooks" / "03_evaluate.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stderr",
        text="  0%|   | 0/10 [00:00<?, ?it/s]\r 50%|#  | 5/10 [00:01<00:01, 5it/s]\r"
             "100%|###| 10/10 [00:02<00:00, 5it/s]\n")]
    note = nbformat.v4.new_markdown_cell("Divide the logits by $T$ ($T > 1$: over-confident).")
    nb.cells += [note, cell]
    nbformat.write(nb, path)
    page = (render.render_site(results_dir=res, use_quarto=False).parent
            / "results" / "notebooks" / "03_evaluate.html").read_text(encoding="utf-8")
    assert not re.search(r'<div[^>]*data-mime-type="application/vnd.jupyter.stderr"', page)
    assert "jp-RenderedText" in page  # the progress, as plain output
    assert "10/10" in page and "5/10" not in page  # the bar's final state only
    assert '<span class="ser-math"><i>T</i> &gt; 1</span>' in page
    assert not re.search(r"\$[^$<]+\$", _text(page))
    assert "mathjax" not in page.lower()


def test_plain_progress_keeps_errors_and_drops_empty() -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\r"),
                    nbformat.v4.new_output("stream", name="stderr", text="UserWarning: w\n"),
                    nbformat.v4.new_output("error", ename="E", evalue="v", traceback=["E"])]
    nb.cells = [cell]
    out = readable.plain_progress(nb).cells[0].outputs
    assert [o.get("name") or o["output_type"] for o in out] == ["stdout", "error"]


@pytest.mark.parametrize("md, html", [
    ("$T$", '<span class="ser-math"><i>T</i></span>'),
    ("$x^2$", '<span class="ser-math"><i>x</i><sup>2</sup></span>'),
    (r"$\alpha = 0.05$", '<span class="ser-math">α = 0.05</span>'),
    ("costs $5 and $6", "costs $5 and $6"),
    ("`$T$` stays code", "`$T$` stays code"),
])
def test_inline_math(md: str, html: str) -> None:
    assert readable.inline_math(md) == html


# ------------------------------------------------------- 6 a run without a cohort


def test_model_only_run_renders_a_model_report(tmp_path: Path) -> None:
    res = _with_evaluation(build_results(tmp_path))
    run = json.loads((res / "run.json").read_text())
    for rec in run["stages"]:
        if rec["stage"] == "01_preprocess":
            rec["params"]["manifest"] = "none"
        if rec["stage"] >= "04":
            rec.update(status="pending", executed=None, error=None, params=None, seconds=None)
    run["profile"] = "emodb"
    (res / "run.json").write_text(json.dumps(run))
    site = render.render_site(results_dir=res, use_quarto=False).parent
    for page in ("index.html", "report.html"):
        text = _text((site / page).read_text(encoding="utf-8"))
        assert "Speech emotion model report" in text
        assert "p001" not in text and "0 caregivers" not in text
        if page == "index.html":  # report.html adds the methods, which describe the design
            assert "caregiver" not in text.lower()
        assert "How well does the computer recognise emotion in speech?" in text
        assert "0.61" in text and "Demonstration data" not in text


def test_cohort_runs_stay_cohort_reports(tmp_path: Path) -> None:
    res = build_results(tmp_path)
    index = render.render_site(results_dir=res, use_quarto=False).read_text(encoding="utf-8")
    assert "How caregivers sound with Humanitude training" in index


# --------------------------------------------------- 13 privacy: ids against a pattern


def test_ids_are_checked_against_the_study_pattern() -> None:
    table = pd.DataFrame({"caregiver": ["p001", "Anna", "p002"],
                          "recording": ["p001_care", "Anna_care", "p002-control"]})
    assert privacy.unexpected_ids(table, id_pattern=r"p\d{3}") == ["caregiver 'Anna'",
                                                                   "recording 'Anna_care'"]
    assert privacy.unexpected_ids(table, id_pattern=r"p\d{3}|Anna") == []
    with pytest.raises(ValueError, match="not a regular expression"):
        privacy.unexpected_ids(table, id_pattern="p(")


def test_render_refuses_ids_outside_the_pattern_and_says_what_it_checked(
        tmp_path: Path) -> None:
    res = build_results(tmp_path)
    site = render.render_site(results_dir=res, use_quarto=False).parent
    for page in ("index.html", "methods.html"):
        raw = (site / page).read_text(encoding="utf-8")
        text = _text(raw)
        assert "checked against the form the study declared for its pseudonymous ids" in text
        assert r"<code>p\d{3}</code>" in raw, page
        assert "p001 to p023" not in text
    recordings = pd.read_csv(res / "tables" / "recordings.csv")
    recordings.loc[0, "caregiver"] = "Anna Meier"
    recordings.to_csv(res / "tables" / "recordings.csv", index=False)
    with pytest.raises(privacy.PrivacyError, match="caregiver 'Anna Meier'.*id_pattern"):
        render.render_site(results_dir=res, use_quarto=False)
    run = json.loads((res / "run.json").read_text())
    run["stages"][0]["params"]["id_pattern"] = r"p\d{3}|Anna Meier"  # the study's own form
    (res / "run.json").write_text(json.dumps(run))
    render.render_site(results_dir=res, use_quarto=False)


def test_main_effects_of_models_with_an_interaction_say_where_they_hold() -> None:
    base = dict(analysis="time_invariant", model="level_trend", feature="f0_hz__median",
                ci_low=5.0, ci_high=15.0, p=0.001, p_fdr=0.004, n_caregivers=23, converged=True)
    table = pd.DataFrame([{**base, "term": "phase[care]", "estimate": 10.0},
                          {**base, "term": "level_trend", "estimate": 10.0},
                          {**base, "term": "phase[care]:level_trend", "estimate": 10.0,
                           "p_fdr": 0.5}])
    summary = findings.effects_summary(table)
    assert "higher in care than in control among untrained caregivers (95 % CI" in summary
    assert "higher per step of training level in the control phase (95 % CI" in summary
    md = sections.mixed_models_markdown(table)
    assert "| care vs. control, among untrained caregivers<br>" in md
    assert "| care vs. control, per step of training level<br>" in md  # the interaction itself
