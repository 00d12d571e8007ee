"""Tests of ser.report.browser: the rendered report in headless Chromium (DevTools protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import STAGES, _notebook, build_results  # tests/ is on sys.path under pytest

from ser.report import browser, render

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser.find_chromium() is None,
                       reason="Chromium is not installed (Debian: `apt-get install chromium`); "
                              "the browser check needs headless Chromium"),
]
pytest.importorskip("websocket", reason="websocket-client is needed to talk to Chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = build_results(tmp_path_factory.mktemp("run"))
    return render.render_site(results_dir=res, use_quarto=False).parent


@pytest.mark.parametrize("page, n_images", [("index.html", 2), ("report.html", 2),
                                            ("results/notebooks/03_evaluate.html", 1)])
def test_pages_load_without_errors(site: Path, tmp_path: Path, page: str, n_images: int) -> None:
    shot = tmp_path / "page.png"
    result = browser.browser_check(site / page, screenshot=shot)
    assert result["console_errors"] == []
    assert len(result["images"]) == n_images
    assert all(img["natural_width"] > 0 for img in result["images"]), result["images"]
    assert result["broken_images"] == []
    assert result["external_requests"] == []  # opens offline
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def successful_results(root: Path) -> Path:
    """``build_results`` turned into a run where every stage succeeded (no stale notebook,
    no failure), with a progress bar on stderr and inline maths in the notebooks."""
    import json

    import nbformat

    res = build_results(root)
    run = json.loads((res / "run.json").read_text())
    figures = {"05_time_dependent": {"fig-trajectories": ("Trajectories.", "Lines", "tab:blue")},
               "07_delta": {"fig-delta": ("Change per caregiver.", "Points", "tab:orange")}}
    for rec in run["stages"]:
        stage = rec["stage"]
        rec.update(status="ok", error=None, executed=f"notebooks/{stage}.ipynb")
        if stage in ("04_inference", "05_time_dependent", "07_delta"):
            nb = _notebook(stage, stage, rec["params"], figures=figures.get(stage))
            nbformat.write(nb, res / "notebooks" / f"{stage}.ipynb")
    nb = nbformat.read(res / "notebooks" / "03_evaluate.ipynb", as_version=4)
    bar = nbformat.v4.new_code_cell("calibrate()")
    bar.outputs = [nbformat.v4.new_output("stream", name="stderr",
                                          text="  0%|  | 0/5\r100%|##| 5/5 [00:01<00:00, 5it/s]\n")]
    nb.cells += [nbformat.v4.new_markdown_cell("Temperature $T$; $T > 1$: over-confident."), bar]
    nbformat.write(nb, res / "notebooks" / "03_evaluate.ipynb")
    (res / "run.json").write_text(json.dumps(run))
    return res


def test_every_page_reads_cleanly_at_1400_px(tmp_path: Path) -> None:
    """Issue 18 item 7: every page of a successful run, as a reader sees it at 1400 px."""
    site = render.render_site(results_dir=successful_results(tmp_path), use_quarto=False).parent
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 2 + len(STAGES) + 1  # index, methods, a page per stage, report.html
    for page in pages:
        shot = tmp_path / "shots" / (page.relative_to(site).as_posix().replace("/", "_") + ".png")
        result = browser.browser_check(page, screenshot=shot, width=1400)
        name = page.relative_to(site).as_posix()
        assert result["console_errors"] == [], name
        assert result["broken_images"] == [], name
        assert result["error_boxes"] == [], name
        assert result["raw_math"] == [], name
        assert result["code_names"] == [], name
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_flags_raw_maths_error_boxes_and_code_names(tmp_path: Path) -> None:
    page = tmp_path / "raw.html"
    page.write_text('<!DOCTYPE html><html><head><title>raw</title></head><body>'
                    '<p>divide by $T$ where mean energy_db__mean rose</p>'
                    '<div data-mime-type="application/vnd.jupyter.stderr">50%|#</div>'
                    '<div class="ser-for-analysts">speech_ratio</div></body></html>')
    result = browser.browser_check(page, screenshot=None, width=1400)
    assert result["raw_math"] == ["$T$"]
    assert result["code_names"] == ["energy_db"]  # the glossary for analysts is exempt
    assert len(result["error_boxes"]) == 1


def test_check_reports_errors_and_broken_images(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                    '<img src="missing.png" alt="gone"><script>console.error("boom");'
                    'throw new Error("kaput");</script></body></html>')
    result = browser.browser_check(page, screenshot=None)
    assert result["broken_images"] and result["broken_images"][0].endswith("missing.png")
    joined = " | ".join(result["console_errors"])
    assert "boom" in joined and "kaput" in joined
    assert result["screenshot"] is None


def test_missing_page_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="render the report first"):
        browser.browser_check(tmp_path / "nope.html", screenshot=None)


def test_check_leaves_no_profile_and_no_browser_process(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The throw-away profile is removed and every process of Chromium's group is gone
    when the check returns (a child still writing to the profile once failed CI)."""
    import subprocess
    import tempfile

    made: list[str] = []
    started: list[subprocess.Popen[bytes]] = []
    real_mkdtemp, real_popen = tempfile.mkdtemp, subprocess.Popen

    def mkdtemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    def popen(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(browser.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(browser.subprocess, "Popen", popen)
    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><html><head><title>p</title></head><body>hi</body></html>")
    system_tmp = Path(tempfile.gettempdir())
    before = set(system_tmp.glob("org.chromium.Chromium.*"))
    for _ in range(3):
        browser.browser_check(page, screenshot=tmp_path / "p.png")
    assert set(system_tmp.glob("org.chromium.Chromium.*")) - before == set()  # its temp files
    assert len(made) == 3 and len(started) == 3
    for profile, proc in zip(made, started):
        assert not Path(profile).exists(), profile
        assert proc.returncode is not None
        assert _live_group_members(proc.pid) == []


def _live_group_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` that are still running (zombies are dead: a container's
    PID 1 may never reap the children Chromium leaves to it). Empty without ``/proc``."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name_end = (text := stat.read_text()).rindex(")")
        except OSError:
            continue  # exited meanwhile
        state, _ppid, group = text[name_end + 2:].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            live.append(f"{stat.parent.name} {text[:name_end + 1]} {state}")
    return live


def test_profile_removal_retries_while_children_still_write(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    profile = tmp_path / "ser-chromium-x"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Cookies").write_text("x")
    calls = []
    real_rmtree = shutil.rmtree  # browser.shutil is the shutil module: patched for everyone

    def flaky_rmtree(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) <= 2:  # what CI saw: a child wrote into Default during removal
            raise OSError(errno.ENOTEMPTY, "Directory not empty", "Default")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(browser.shutil, "rmtree", flaky_rmtree)
    browser._remove_profile(profile, pause_s=0.0)
    assert len(calls) == 3 and not profile.exists()

    calls.clear()
    (profile / "Default").mkdir(parents=True)

    def busy_rmtree(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(path)
        if not kwargs.get("ignore_errors"):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(browser.shutil, "rmtree", busy_rmtree)
    browser._remove_profile(profile, attempts=3, pause_s=0.0)  # gives up without raising
    assert len(calls) == 4 and not profile.exists()  # 3 tries, then a best-effort sweep
