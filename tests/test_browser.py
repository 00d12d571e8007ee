"""Tests of ser.browser: the rendered report in headless Chromium (DevTools protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import build_results  # tests/ is on sys.path under pytest

from ser import browser, report

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
    return report.render(results_dir=res, use_quarto=False).parent


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
