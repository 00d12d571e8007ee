"""Every stage notebook: front matter, a tagged typed parameters cell, no outputs,
and params/<stage>.yaml with exactly the notebook's keys and defaults."""

from __future__ import annotations

import ast
import json

import nbformat
import papermill
import pytest
import yaml

from ser.core import paths
from ser.run import params

STAGES = params.stages()
EXPECTED = ["01_preprocess", "02_train", "03_evaluate", "04_inference",
            "05_time_dependent", "06_time_invariant", "07_delta"]


def test_stage_order_is_the_study_order():
    assert STAGES == EXPECTED


def _nb(stage):
    return nbformat.read(paths.NOTEBOOKS / f"{stage}.ipynb", as_version=4)


@pytest.mark.parametrize("stage", STAGES)
def test_front_matter_first(stage):
    first = _nb(stage).cells[0]
    assert first.cell_type in ("raw", "markdown")
    src = first.source.strip()
    assert src.startswith("---") and src.rstrip().endswith("---"), "first cell must be YAML front matter"
    meta = yaml.safe_load(src.strip("-\n"))
    assert meta.get("title") and meta.get("description")


@pytest.mark.parametrize("stage", STAGES)
def test_parameters_cell_typed_and_commented(stage):
    cells = _nb(stage).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], "the second cell (and only it) must be tagged 'parameters'"
    tree = ast.parse(cells[1].source)
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), f"{stage}: parameter line without a type: {ast.unparse(node)}"
    for line in cells[1].source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{stage}: parameter without a comment: {line}"


@pytest.mark.parametrize("stage", STAGES)
def test_committed_without_outputs(stage):
    for c in _nb(stage).cells:
        if c.cell_type == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, f"{stage} has outputs"


@pytest.mark.parametrize("stage", STAGES)
def test_params_yaml_mirrors_notebook(stage):
    declared = papermill.inspect_notebook(str(paths.NOTEBOOKS / f"{stage}.ipynb"))
    values = yaml.safe_load(params.stage_file(stage).read_text()) or {}
    assert set(values) == set(declared), f"params/{stage}.yaml keys differ from the notebook"
    for k, info in declared.items():
        default = ast.literal_eval(info["default"])
        assert values[k] == default, f"params/{stage}.yaml: {k}={values[k]!r} but notebook default {default!r}"


@pytest.mark.parametrize("profile", sorted(p.stem for p in paths.PROFILES.glob("*.yaml")))
def test_profiles_name_declared_keys(profile):
    for stage in STAGES:
        params.load_stage_params(stage, profile=profile)  # raises on an undeclared key


def test_notebooks_are_valid_json():
    for stage in STAGES:
        json.loads((paths.NOTEBOOKS / f"{stage}.ipynb").read_text())
        nbformat.validate(_nb(stage))


@pytest.mark.parametrize("stage", STAGES)
def test_provenance_takes_every_parameter_from_the_parameters_cell(stage):
    calls = [c.source for c in _nb(stage).cells if "write_provenance(" in c.source]
    assert len(calls) == 1, f"{stage}: one provenance cell expected"
    assert f'params=params.notebook_values("{stage}", globals())' in calls[0], (
        f"{stage}: provenance must record the parameters cell's own keys, not a retyped dict")


def test_notebook_values_reads_every_declared_parameter_in_order():
    declared = params.notebook_parameters("04_inference")
    namespace = {name: f"value of {name}" for name in declared} | {"unrelated": 1}
    values = params.notebook_values("04_inference", namespace)
    assert list(values) == list(declared) and "unrelated" not in values
    assert values["hop_s"] == "value of hop_s"
    del namespace["hop_s"]
    with pytest.raises(params.ParamsError, match="declares hop_s"):
        params.notebook_values("04_inference", namespace)


def test_text_channel_params_and_cells():
    """Stage 04's text-channel params (off by default) and its cells after windows.csv is
    written and before the provenance; stages 05-06 select the channel right after reading
    windows.csv; stage 07 records stage 06's channel instead of selecting again."""
    declared = {k: ast.literal_eval(v["default"]) for k, v in
                papermill.inspect_notebook(str(paths.NOTEBOOKS / "04_inference.ipynb")).items()}
    assert {k: declared[k] for k in ("asr_model", "asr_backend", "language", "text_model", "text_weight")} == {
        "asr_model": "", "asr_backend": "whisper", "language": "fr", "text_model": "", "text_weight": 0.3}
    code = [c.source for c in _nb("04_inference").cells if c.cell_type == "code"]
    where = {k: next(i for i, s in enumerate(code) if k in s)
             for k in ("predict_table(bundle", "add_text_channel_to_table(", "write_provenance(")}
    assert where["predict_table(bundle"] < where["add_text_channel_to_table("] < where["write_provenance("]
    assert '"off_reason": text_off_reason' in code[where["write_provenance("]]
    for stage in ("05_time_dependent", "06_time_invariant"):
        info = papermill.inspect_notebook(str(paths.NOTEBOOKS / f"{stage}.ipynb"))
        assert ast.literal_eval(info["channel"]["default"]) == "acoustic"
        src = next(c.source for c in _nb(stage).cells if "load_windows(" in c.source)
        assert src.index("load_windows(") < src.index("select_channel(windows, channel=channel")
    assert "channel" not in papermill.inspect_notebook(str(paths.NOTEBOOKS / "07_delta.ipynb"))
    assert not any("select_channel(" in c.source for c in _nb("07_delta").cells)
    assert any('"channel": channel_06' in c.source for c in _nb("07_delta").cells)


@pytest.mark.parametrize("nb_path", sorted(paths.NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_cell_has_an_id(nb_path):
    """nbformat 4.5 cells carry an id; a cell added without one makes papermill warn on every run."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    missing = [i for i, c in enumerate(nb["cells"]) if "id" not in c]
    assert not missing, f"{nb_path.name}: cells {missing} have no id"
