"""The runner: stage selection, params checks, failure reporting, run record."""

from __future__ import annotations

import json

import nbformat
import pytest

from ser.core import paths
from ser.run import params, pipeline


def _write_nb(path, params_src, body_src):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_raw_cell('---\ntitle: "t"\ndescription: "d"\n---'),
        nbformat.v4.new_code_cell(params_src, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body_src),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A throwaway project: two stages, the second fails when told to."""
    nbs, prm, prof = tmp_path / "notebooks", tmp_path / "params", tmp_path / "params" / "profiles"
    for d in (nbs, prof):
        d.mkdir(parents=True)
    out = tmp_path / "results"
    _write_nb(nbs / "01_first.ipynb", "n: int = 2  # a number",
              "import os, pathlib\n"
              "p = pathlib.Path(os.environ['SER_RESULTS_DIR']) / 'first.txt'\n"
              "p.write_text(str(n * 21))")
    _write_nb(nbs / "02_second.ipynb", "fail: bool = False  # raise on purpose",
              "x = 1\nif fail:\n    raise ValueError('planted failure in stage two')")
    (prm / "01_first.yaml").write_text("n: 2\n")
    (prm / "02_second.yaml").write_text("fail: false\n")
    (prof / "boom.yaml").write_text("02_second:\n  fail: true\n")
    (prof / "typo.yaml").write_text("01_first:\n  nn: 3\n")
    monkeypatch.setattr(paths, "NOTEBOOKS", nbs)
    monkeypatch.setattr(paths, "PARAMS", prm)
    monkeypatch.setattr(paths, "PROFILES", prof)
    monkeypatch.setenv("SER_RESULTS_DIR", str(out))
    return out


def test_stage_names_resolve(project):
    assert params.stages() == ["01_first", "02_second"]
    for alias in ("02", "2", "second", "02_second"):
        assert params.resolve_stage(alias) == "02_second"
    with pytest.raises(params.ParamsError, match="unknown stage 'third'"):
        params.resolve_stage("third")


def test_undeclared_key_names_file_and_key(project):
    with pytest.raises(params.ParamsError, match=r"profiles/typo.yaml: key 'nn' is not declared.*01_first"):
        pipeline.run(profile="typo", render=False, progress=False, kernel="python3")
    assert not (project / "run.json").exists(), "nothing may run when params are wrong"


def test_unknown_profile(project):
    with pytest.raises(params.ParamsError, match="profile 'nope' not found"):
        params.load_profile("nope")


def test_successful_run_writes_record_and_executed_notebooks(project):
    rec = pipeline.run(profile=None, render=False, progress=False, kernel="python3")
    assert [s["status"] for s in rec["stages"]] == ["ok", "ok"]
    assert (project / "first.txt").read_text() == "42"
    assert (project / "notebooks" / "02_second.ipynb").is_file()
    on_disk = json.loads((project / "run.json").read_text())
    assert on_disk["params_hash"] == rec["params_hash"] and on_disk["finished_utc"]


def test_failure_names_notebook_cell_and_error_and_keeps_output(project):
    with pytest.raises(pipeline.StageFailed) as ei:
        pipeline.run(profile="boom", render=False, progress=False, kernel="python3")
    msg = str(ei.value)
    assert "02_second.ipynb" in msg and "ValueError: planted failure in stage two" in msg
    assert "cell In [" in msg
    assert (project / "notebooks" / "02_second.ipynb").is_file(), "executed notebook must be kept"
    rec = json.loads((project / "run.json").read_text())
    assert [s["status"] for s in rec["stages"]] == ["ok", "failed"]


def test_from_to_runs_only_the_range_and_keeps_earlier_status(project):
    pipeline.run(profile=None, render=False, progress=False, kernel="python3")
    (project / "first.txt").unlink()
    rec = pipeline.run(profile=None, from_stage="02", render=False, progress=False, kernel="python3")
    assert not (project / "first.txt").exists(), "stage 01 must not rerun with --from 02"
    assert [s["status"] for s in rec["stages"]] == ["ok", "ok"]
    with pytest.raises(params.ParamsError, match="comes after"):
        pipeline.run(profile=None, from_stage="02", to_stage="01", render=False, progress=False)
