"""Tests of ser.report.privacy: the rendered report is scrubbed, and the scan finds planted leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

# tests/ is on sys.path under pytest
from test_report import PLANTED, RECORDINGS, _all_html, build_results

from ser.report import privacy, render


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = build_results(tmp_path_factory.mktemp("run"))
    return render.render_site(results_dir=res, use_quarto=False).parent


def _leaky_site(root: Path) -> Path:
    """A site with one clean page, one page naming a recording, and an audio file."""
    leaky = root / "leaky"
    (leaky / "sub").mkdir(parents=True)
    (leaky / "ok.html").write_text("<p>p001_care: pseudonymous id only</p>")
    (leaky / "sub" / "page.html").write_text(f"<p>see /srv/study/audio/{PLANTED}</p>")
    (leaky / "p003_care.wav").write_bytes(b"RIFF")
    return leaky


def test_privacy_scan_clean_and_planted(site: Path, tmp_path: Path) -> None:
    assert privacy.scan_for_identifiers(site, RECORDINGS) == []
    everything = "".join(_all_html(site).values())
    assert PLANTED not in everything and "/srv/study" not in everything
    assert "[file withheld]" in everything  # the notebook's print was scrubbed, not dropped
    hits = privacy.scan_for_identifiers(_leaky_site(tmp_path), RECORDINGS)
    assert f"sub/page.html: /srv/study/audio/{PLANTED}" in hits
    assert f"sub/page.html: {PLANTED}" in hits
    assert "p003_care.wav: audio file in the site" in hits
    assert not any(h.startswith("ok.html") for h in hits)


def test_scan_rejects_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no 'path' column"):
        privacy.scan_for_identifiers(tmp_path, RECORDINGS.drop(columns="path"))
    with pytest.raises(FileNotFoundError, match="render the report first"):
        privacy.scan_for_identifiers(tmp_path / "nope", RECORDINGS)


def test_check_site_deletes_only_the_files_with_hits(tmp_path: Path) -> None:
    leaky = _leaky_site(tmp_path)
    with pytest.raises(privacy.PrivacyError, match=rf"sub/page\.html: .*{PLANTED}"):
        privacy.check_site(leaky, RECORDINGS)
    assert not (leaky / "sub" / "page.html").exists()
    assert not (leaky / "p003_care.wav").exists()
    assert (leaky / "ok.html").is_file()
    privacy.check_site(leaky, RECORDINGS)  # clean now: returns without raising
