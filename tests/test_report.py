"""Tests of ser.report.render and the modules it draws on (state, notebooks, sections, quarto):
fallback site, stale/failed stages, refusal to leak, Quarto staging.

``build_results`` (a small fake run) is shared with ``test_privacy.py`` and
``test_browser.py``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import stat
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from ser.core import provenance
from ser.report import notebooks, privacy, quarto, render, sections, state

# ----------------------------------------------------------------------------- fixtures

PLANTED = "p001_care.wav"  # a recording file name that a notebook prints (must be scrubbed)


def _png(color: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot([0, 1, 2], [1, 0, 1], color=color)
    ax.set_title(color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _notebook(stage: str, title: str, params: dict, *, figures: dict | None = None,
              outputs_text: str = "", error: str | None = None,
              injected: dict | None = None) -> nbformat.NotebookNode:
    """An executed-looking notebook: front matter, parameters, a print, labelled figures."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": injected if injected is not None else params,
                                "input_path": f"/home/someone/notebooks/{stage}.ipynb"}
    cells = [nbformat.v4.new_raw_cell(f'---\ntitle: "{title}"\ndescription: "{stage} test"\n---'),
             nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()),
                                       metadata={"tags": ["parameters"]})]
    code = nbformat.v4.new_code_cell("print(table)")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=outputs_text or "rows: 4\n")]
    cells.append(code)
    for label, (cap, alt, color) in (figures or {}).items():
        cell = nbformat.v4.new_code_cell(
            f'#| label: {label}\n#| fig-cap: "{cap}"\n#| fig-alt: "{alt}"\nplot()')
        cell.outputs = [nbformat.v4.new_output("display_data", data={
            "image/png": _png(color), "text/plain": "<Figure size 180x120>"})]
        cells.append(cell)
    if error:
        bad = nbformat.v4.new_code_cell("fit_models(windows)")
        bad.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue=error,
                                              traceback=[f"ValueError: {error}"])]
        cells.append(bad)
    nb.cells = cells
    return nb


RECORDINGS = pd.DataFrame({
    "recording": ["p001_control", "p001_care", "p002_control", "p002_care",
                  "p003_control", "p003_care", "p004_control", "p004_care"],
    "caregiver": ["p001", "p001", "p002", "p002", "p003", "p003", "p004", "p004"],
    "level": ["untrained", "untrained", "expert", "expert", "expert", "expert",
              "beginner", "beginner"],
    "phase": ["control", "care"] * 4,
    "session": [1] * 8,
    "path": [f"/srv/study/audio/{r}.wav" for r in
             ["p001_control", PLANTED[:-4], "p002_control", "p002_care",
              "p003_control", "p003_care", "p004_control", "p004_care"]],
    # control: 30+60+45+45 s = 3.0 min; care: 90+60+60+60 s = 4.5 min
    "duration_s": [30.0, 90.0, 60.0, 60.0, 45.0, 60.0, 45.0, 60.0],
    "sample_rate": [16000] * 8,
})

STAGES = ["01_preprocess", "02_train", "03_evaluate", "04_inference", "05_time_dependent",
          "06_time_invariant", "07_delta"]


def build_results(root: Path, *, with_run: bool = True) -> Path:
    """A small fake ``results/`` of a run where 05 failed, 07 was skipped, 04 is stale."""
    res = root / "results"
    nbdir = res / "notebooks"
    nbdir.mkdir(parents=True)
    params = {s: {"seed": 1, "stage_tag": s} for s in STAGES}
    params["01_preprocess"]["manifest"] = "/srv/study/audio/manifest.csv"
    nbs = {
        "01_preprocess": _notebook("01_preprocess", "01 · Preprocess", params["01_preprocess"],
                                   outputs_text=f"loaded /srv/study/audio/{PLANTED} and "
                                                "data/demo/cohort/p002_care.wav\n"),
        "02_train": _notebook("02_train", "02 · Train", params["02_train"]),
        "03_evaluate": _notebook("03_evaluate", "03 · Evaluate", params["03_evaluate"],
                                 figures={"fig-confusion": (
                                     "Confusion matrix on held-out speakers.", "A 4 by 4 grid",
                                     "tab:blue")}),
        # executed by an older run with another seed: stale, its figure must not show
        "04_inference": _notebook("04_inference", "04 · Inference", params["04_inference"],
                                  figures={"fig-emotion-timeline": ("OLD timeline", "old",
                                                                    "tab:red")},
                                  injected={"seed": 99, "stage_tag": "04_inference"}),
        "05_time_dependent": _notebook("05_time_dependent", "05 · Time-dependent",
                                       params["05_time_dependent"],
                                       error="singular matrix in MixedLM"),
        "06_time_invariant": _notebook("06_time_invariant", "06 · Time-invariant",
                                       params["06_time_invariant"],
                                       figures={"fig-forest": ("Effects with 95% CI.",
                                                               "Forest plot of effects",
                                                               "tab:green")}),
    }
    for stage, nb in nbs.items():
        nbformat.write(nb, nbdir / f"{stage}.ipynb")
    status = {"05_time_dependent": "failed", "07_delta": "skipped"}
    errors = {"05_time_dependent": "stage 05_time_dependent failed in notebooks/"
                                   "05_time_dependent.ipynb, cell In [4]: ValueError: singular "
                                   "(data/demo/cohort/p003_care.wav)\n"
                                   f"The executed notebook is kept at {nbdir}/05_time_dependent"
                                   ".ipynb.",
              "07_delta": "not run because 05_time_dependent failed"}
    run = {"profile": "demo", "started_utc": "2025-01-01T10:00:00+00:00",
           "finished_utc": "2025-01-01T10:05:00+00:00", "params_hash": "abc123def4567890",
           "stages": [{"stage": s, "status": status.get(s, "ok"),
                       "executed": None if s == "07_delta" else f"notebooks/{s}.ipynb",
                       "error": errors.get(s), "params": params[s], "seconds": 12.0}
                      for s in STAGES]}
    if with_run:
        (res / "run.json").write_text(json.dumps(run))
    tables = res / "tables"
    tables.mkdir()
    RECORDINGS.to_csv(tables / "recordings.csv", index=False)
    pd.DataFrame([
        dict(analysis="time_invariant", feature="f0_mean_hz", model="level_trend",
             term="phase[care]", estimate=12.5, ci_low=4.1, ci_high=20.9, p=0.003,
             p_fdr=0.012, n_caregivers=4, n_obs=8, converged=True, note=""),
        dict(analysis="time_invariant", feature="speech_ratio", model="level_trend",
             term="phase[care]:level_trend", estimate=0.02, ci_low=-0.01, ci_high=0.05,
             p=0.2, p_fdr=0.4, n_caregivers=4, n_obs=8, converged=True, note=""),
        dict(analysis="time_invariant", feature="f0_mean_hz", model="level_trend",
             term="Intercept", estimate=200.0, ci_low=190, ci_high=210, p=None, p_fdr=None,
             n_caregivers=4, n_obs=8, converged=True, note=""),
        dict(analysis="time_dependent", feature="energy_db", model="level_trend",
             term="time", estimate=-7.77, ci_low=-9, ci_high=-6, p=0.001, p_fdr=0.001,
             n_caregivers=4, n_obs=80, converged=True, note="FROM-FAILED-STAGE"),
    ]).to_csv(tables / "mixed_models.csv", index=False)
    prov = res / "provenance"
    prov.mkdir()
    for s in ["01_preprocess", "02_train", "03_evaluate"]:
        (prov / f"{s}.json").write_text(json.dumps({
            "stage": s, "params": params[s], "git_commit": "0123456789abcdef",
            "packages": {"python": "3.11.9", "numpy": "2.1.0"},
            "inputs": {"combined": "f" * 64,
                       "items": [{"name": "cohort", "files": 9, "sha256": "e" * 64}]}}))
    # 04 produced windows.csv, which 06 read: provenance links them by name and hash
    (tables / "windows.csv").write_text("recording,start_s\np001_care,0.0\n")
    (prov / "04_inference.json").write_text(json.dumps({
        "stage": "04_inference", "params": params["04_inference"],
        "inputs": {"items": []}, "outputs": ["windows.csv"]}))
    (prov / "06_time_invariant.json").write_text(json.dumps({
        "stage": "06_time_invariant", "params": params["06_time_invariant"],
        "inputs": provenance.hash_inputs([tables / "windows.csv"]),
        "outputs": ["descriptors.csv", "mixed_models.csv"]}))
    model = res / "models" / "cnn_small"
    model.mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({
        "labels": ["angry", "happy", "neutral", "sad"], "sample_rate": 16000, "window_s": 3.0,
        "arch": "cnn", "arch_params": {"channels": 16}, "features": {"n_mels": 64},
        "train_params": {"epochs": 2, "data_root": "/srv/corpus"},
        "split": {"train": ["f1", "m1"], "val": ["f2"], "test": ["m2"]},
        "metrics": {"test": {"uar": 0.61, "n_failed": 0}}, "git_commit": "0123456789abcdef"}))
    return res


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = build_results(tmp_path_factory.mktemp("run"))
    index = render.render_site(results_dir=res, use_quarto=False)
    return index.parent


def _all_html(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text(encoding="utf-8")
            for p in site.rglob("*.html")}


# ------------------------------------------------------------------------ fallback site


def test_index_has_notice_figure_boxes_and_cohort(site: Path) -> None:
    html = (site / "index.html").read_text(encoding="utf-8")
    assert render.FALLBACK_NOTICE in html
    # the available figure, inlined, with its caption and alt text
    fig = re.search(r'<figure class="ser-figure" id="fig-confusion">(.*?)</figure>', html)
    assert fig and 'src="data:image/png;base64,' in fig.group(1)
    assert 'alt="A 4 by 4 grid"' in fig.group(1) and "Confusion matrix on held-out" in fig.group(1)
    # failed, skipped and stale stages show as such, never as a figure
    assert "<strong>05_time_dependent</strong> failed" in html
    assert "<strong>07_delta</strong> skipped" in html
    assert "<strong>04_inference</strong> stale" in html
    assert 'id="fig-emotion-timeline"' not in html and "OLD timeline" not in html
    assert 'id="fig-forest"' in html
    # cohort: caregivers per level and minutes per phase (3.0 control, 4.5 care)
    row = re.search(r"<td>Expert</td>\s*<td[^>]*>2</td>\s*<td[^>]*>4</td>", html)
    assert row, "expert row should list 2 caregivers and 4 recordings"
    total = re.search(r"<td><strong>All</strong></td>\s*<td[^>]*>4</td>\s*<td[^>]*>8</td>\s*"
                      r"<td[^>]*>3.0</td>\s*<td[^>]*>4.5</td>\s*<td[^>]*>7.5</td>", html)
    assert total, "totals row should read 4 caregivers, 8 recordings, 3.0 / 4.5 / 7.5 min"
    # mixed models: shown for the ok stage, withheld for the failed one
    assert "f0_mean_hz" in html and "care vs. control" in html
    assert "FROM-FAILED-STAGE" not in html and "-7.77" not in html
    assert "Intercept" not in html.split("Statistical models")[1].split("How to read")[0]


def test_every_stage_has_a_page_with_folded_code(site: Path) -> None:
    pages = _all_html(site)
    for stage in STAGES:
        assert f"results/notebooks/{stage}.html" in pages, stage
    ok = pages["results/notebooks/03_evaluate.html"]
    assert '<details class="code-fold">' in ok and render.FALLBACK_NOTICE in ok
    assert "#| label" not in ok  # Quarto cell options are not shown as code
    failed = pages["results/notebooks/05_time_dependent.html"]
    assert "This stage failed" in failed and "singular matrix in MixedLM" in failed
    assert "kept at results/notebooks/05_time_dependent.ipynb" in failed  # no absolute path
    assert "This stage was skipped" in pages["results/notebooks/07_delta.html"]
    stale = pages["results/notebooks/04_inference.html"]
    assert "results are outdated" in stale and "OLD timeline" not in stale
    # nav bar links every page, relative to the page
    assert 'href="../../methods.html"' in failed and 'href="05_time_dependent.html"' in ok


def test_methods_page_shows_hashes_not_locations(site: Path) -> None:
    html = (site / "methods.html").read_text(encoding="utf-8")
    assert "e" * 16 in html and "0123456789abcdef" in html  # input hash, git commit
    assert "cnn_small" in html and "f1, m1" in html  # model card with split speakers
    assert "UAR 0.61" in html and "n_failed" not in html
    assert "/srv/study" not in html and "/srv/corpus" not in html
    assert "[location withheld]" in html


def test_report_html_is_self_contained(site: Path) -> None:
    html = (site / "report.html").read_text(encoding="utf-8")
    assert render.external_references(html) == []
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'<(?:link|script)[^>]+(?:href|src)=', html)
    assert re.search(r'id="methods"', html)  # methods are part of the single file
    assert 'href="#methods"' in html and "report.html" not in html
    for page, text in _all_html(site).items():
        assert render.external_references(text) == [], page


def test_render_refuses_a_page_that_still_names_a_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = build_results(tmp_path)
    monkeypatch.setattr(privacy.Scrubber, "__call__", lambda self, text: text)  # scrubbing off
    with pytest.raises(privacy.PrivacyError, match=PLANTED):
        render.render_site(results_dir=res, use_quarto=False)
    assert not (res / "site" / "results" / "notebooks" / "01_preprocess.html").exists()


# ---------------------------------------------------------------------- run-state edge


def test_without_run_record_nothing_is_shown(tmp_path: Path) -> None:
    res = build_results(tmp_path, with_run=False)
    html = render.render_site(results_dir=res, use_quarto=False, self_contained=False) \
        .read_text(encoding="utf-8")
    assert "No run record" in html and "<img" not in html
    assert not (res / "site" / "report.html").exists()


def test_bad_run_record_is_named(tmp_path: Path) -> None:
    res = build_results(tmp_path)
    run = json.loads((res / "run.json").read_text())
    run["stages"][0]["status"] = "done"
    (res / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"run.json: stage '01_preprocess' has status 'done'"):
        render.render_site(results_dir=res, use_quarto=False)


def test_params_hash_mismatch_marks_stale(tmp_path: Path) -> None:
    res = build_results(tmp_path)
    nb = nbformat.read(res / "notebooks" / "03_evaluate.ipynb", as_version=4)
    nb.metadata["ser"] = {"params_hash": "older-run"}
    nbformat.write(nb, res / "notebooks" / "03_evaluate.ipynb")
    states = {s.stage: s for s in state.stage_states(res, state.load_run_record(res))}
    assert states["03_evaluate"].status == "stale" and "older-run" in states["03_evaluate"].reason
    assert states["06_time_invariant"].status == "ok"
    assert states["05_time_dependent"].executed is not None  # failed, but from this run


def test_changed_upstream_output_marks_downstream_stale(tmp_path: Path) -> None:
    res = build_results(tmp_path)
    states = {s.stage: s for s in state.stage_states(res, state.load_run_record(res))}
    assert states["06_time_invariant"].status == "ok"
    (res / "tables" / "windows.csv").write_text("recording,start_s\np001_care,3.0\n")  # re-run 04
    states = {s.stage: s for s in state.stage_states(res, state.load_run_record(res))}
    assert states["06_time_invariant"].status == "stale"
    assert "windows.csv" in states["06_time_invariant"].reason
    assert states["06_time_invariant"].executed is None


def test_use_quarto_without_quarto_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "find_quarto", lambda: None)
    with pytest.raises(FileNotFoundError, match="Quarto CLI is not on PATH"):
        render.render_site(results_dir=build_results(tmp_path), use_quarto=True)


def test_missing_results_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `ser run` first"):
        render.render_site(results_dir=tmp_path / "missing", use_quarto=False)


# ------------------------------------------------------------------------- quarto path


def _fake_quarto(tmp_path: Path, *, fail: bool) -> str:
    """A stand-in `quarto` that records its calls and writes the expected outputs."""
    script = tmp_path / "quarto"
    log = tmp_path / "quarto.log"
    script.write_text(f"""#!/bin/sh
echo "$PWD $@" >> {log}
if [ "{int(fail)}" = "1" ]; then echo "ERROR: embed failed: boom" >&2; exit 3; fi
if [ "$2" = "." ]; then mkdir -p _site && echo '<html>quarto site</html>' > _site/index.html
else mkdir -p _out && echo '<html>single</html>' > _out/report.html; fi
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_quarto_path_stages_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = build_results(tmp_path)
    monkeypatch.setattr(render, "find_quarto", lambda: _fake_quarto(tmp_path, fail=False))
    index = render.render_site(results_dir=res)  # auto: the fake quarto is "on PATH"
    assert index.read_text() == "<html>quarto site</html>\n"
    assert (index.parent / "report.html").read_text() == "<html>single</html>\n"
    calls = (tmp_path / "quarto.log").read_text().splitlines()
    assert calls[0].endswith("report/quarto render . --no-execute")
    assert calls[1].endswith("report/quarto_single render report.qmd --no-execute")
    staging = res / "report" / "quarto"
    import yaml

    cfg = yaml.safe_load((staging / "_quarto.yml").read_text())
    assert cfg["project"]["output-dir"] == "_site" and cfg["execute"]["enabled"] is False
    qmd = (staging / "index.qmd").read_text()
    assert "{{< embed results/notebooks/03_evaluate.ipynb#fig-confusion >}}" in qmd
    assert "fig-trajectories" in qmd and "{{< embed results/notebooks/05" not in qmd
    assert "{{< include" not in qmd and "Study question" in qmd
    staged = nbformat.read(staging / "results" / "notebooks" / "01_preprocess.ipynb", 4)
    assert PLANTED not in json.dumps(staged)
    single = yaml.safe_load((res / "report" / "quarto_single" / "_quarto.yml").read_text())
    assert single["format"]["html"]["embed-resources"] is True


def test_quarto_failure_raises_with_stderr_after_writing_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = build_results(tmp_path)
    monkeypatch.setattr(render, "find_quarto", lambda: _fake_quarto(tmp_path, fail=True))
    with pytest.raises(quarto.QuartoError, match="boom"):
        render.render_site(results_dir=res, use_quarto=True)
    index = (res / "site" / "index.html").read_text(encoding="utf-8")
    assert "quarto render failed" in index


# ------------------------------------------------------------------------ small pieces


def test_cell_options_and_figures() -> None:
    nb = _notebook("x", "X", {"a": 1}, figures={"fig-a": ("Cap", "Alt", "k")})
    figs = notebooks.notebook_figures(nb)
    assert list(figs) == ["fig-a"] and figs["fig-a"].alt == "Alt"
    assert figs["fig-a"].images[0][0] == "image/png"
    assert notebooks.cell_options('#| label: fig-b\n#| fig-cap: "A: b"\nx = 1') == \
        {"label": "fig-b", "fig-cap": "A: b"}
    assert notebooks.cell_options("x = 1\n#| label: late") == {}


def test_cohort_markdown_requires_columns() -> None:
    with pytest.raises(ValueError, match=r"recordings.csv lacks columns \['duration_s'\]"):
        sections.cohort_markdown(RECORDINGS.drop(columns="duration_s"))


@pytest.mark.parametrize("metrics, row", [({}, None), ({"uar": 0.5}, "| Scores | UAR 0.5 |"),
                                          ({"test": {"uar": 0.61}},
                                           "| Scores: test | UAR 0.61 |")])
def test_model_card_reads_flat_nested_or_no_metrics(tmp_path: Path, metrics: dict,
                                                    row: str | None) -> None:
    res = build_results(tmp_path)
    card_path = res / "models" / "cnn_small" / "model.json"
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "metrics": metrics}))
    run = state.load_run_record(res)
    text = sections.methods_sections(res, run, state.stage_states(res, run))["_methods_model.md"]
    assert "Model `cnn_small`" in text
    assert (row in text) if row else "| Scores" not in text


@pytest.mark.parametrize("target, expected", [(None, "| Pitch normalisation | off"),
                                              (200.0, "moved to a 200 Hz voice register")])
def test_model_card_says_whether_pitch_was_normalised(tmp_path: Path, target: float | None,
                                                       expected: str) -> None:
    res = build_results(tmp_path)
    card_path = res / "models" / "cnn_small" / "model.json"
    card = {**json.loads(card_path.read_text()), **({"pitch_norm_hz": target} if target else {})}
    card_path.write_text(json.dumps(card))
    run = state.load_run_record(res)
    text = sections.methods_sections(res, run, state.stage_states(res, run))["_methods_model.md"]
    assert expected in text


def test_mixed_models_section_shows_primary_results_first() -> None:
    rows = pd.DataFrame({
        "analysis": ["time_invariant"] * 3, "feature": ["a", "b", "c"],
        "model": ["level_trend", "primary", "primary"], "term": ["phase[care]", "care", "level_step"],
        "estimate": [1.0, 2.0, 3.0], "ci_low": [0.5, 1.0, 1.0], "ci_high": [1.5, 3.0, 5.0],
        "p_fdr": [0.0001, 0.01, 0.5], "p_adj": [0.0001, 0.03, 0.9], "n_caregivers": 23,
        "family": ["exploratory", "primary", "primary"], "converged": True,
        "adjustment": ["BH", "Holm over the primary family of 28 hypotheses", "Holm over the primary family of 28 hypotheses"],
        "detectable_80": [None, 1.5, 4.0]})
    md = sections.mixed_models_markdown(rows, max_rows=0)
    primary_block = md.split("#### Primary hypotheses")[1].split("####")[0]
    assert primary_block.index("| b |") < primary_block.index("| c |")  # by adjusted p
    assert "| a |" not in md  # exploratory rows beyond max_rows are only counted
    assert md.index("#### Primary hypotheses") < md.index("(exploratory)")
    assert "**1** of 2" in md and "Holm over the primary family of 28" in md
    assert "care vs. control" in primary_block and "p (adjusted)" in md
    assert "0.030" in primary_block  # the study-wise adjusted p, not p_fdr (0.010)
    assert "could have seen ±1.5" in md and "could have seen ±4" in md
