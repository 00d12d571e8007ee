"""Stage parameters: ``params/<stage>.yaml``, profiles, and their check against notebooks.

Each numbered notebook declares its parameters in a cell tagged ``parameters``;
``params/<stage>.yaml`` holds exactly the same keys with the values a run uses.
A profile (``params/profiles/<name>.yaml``) overrides some of them per stage::

    02_train:
      epochs: 2
    demo_data:          # optional: generate the demo data first (see ser.data.demo)
      recording_s: 30

A key that the notebook does not declare is an error that names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ser.core import paths

STAGE_RE = re.compile(r"^(\d\d)_([a-z0-9_]+)$")
#: Profile sections that are not notebook stages.
SPECIAL_SECTIONS: tuple[str, ...] = ("demo_data", "description")


class ParamsError(ValueError):
    """A params or profile file is missing, malformed or names an undeclared key."""


def stages(*, notebooks_dir: Path | None = None) -> list[str]:
    """Stage names in run order, from ``notebooks/NN_name.ipynb``."""
    nb_dir = notebooks_dir or paths.NOTEBOOKS
    names = sorted(p.stem for p in nb_dir.glob("*.ipynb") if STAGE_RE.match(p.stem))
    if not names:
        raise ParamsError(f"no stage notebooks (NN_name.ipynb) found in {nb_dir}")
    return names


def resolve_stage(name: str, *, all_stages: list[str] | None = None) -> str:
    """Accept ``"02"``, ``"train"`` or ``"02_train"`` and return the full stage name."""
    all_stages = all_stages or stages()
    for s in all_stages:
        num, short = STAGE_RE.match(s).groups()  # type: ignore[union-attr]
        if name in (s, num, short, num.lstrip("0")):
            return s
    raise ParamsError(f"unknown stage {name!r}; stages are: {', '.join(all_stages)}")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def stage_file(stage: str) -> Path:
    """``params/<stage>.yaml``."""
    return paths.PARAMS / f"{stage}.yaml"


def load_profile(profile: str | None) -> dict[str, Any]:
    """Read ``params/profiles/<profile>.yaml`` (``None`` or ``"default"`` → empty)."""
    if profile in (None, "", "default"):
        return {}
    path = paths.PROFILES / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in paths.PROFILES.glob("*.yaml"))
        raise ParamsError(f"profile {profile!r} not found: {path} does not exist; "
                          f"known profiles: {', '.join(known) or 'none'}")
    data = _read_yaml(path)
    known_stages = stages()
    for section, values in data.items():
        if section in SPECIAL_SECTIONS:
            continue
        if section not in known_stages:
            raise ParamsError(f"{path}: section {section!r} is not a stage; stages are "
                              f"{', '.join(known_stages)} (plus {', '.join(SPECIAL_SECTIONS)})")
        if not isinstance(values, dict):
            raise ParamsError(f"{path}: section {section!r} must be a mapping of key: value")
    return data


def notebook_parameters(stage: str) -> dict[str, dict[str, Any]]:
    """Parameters declared in the tagged cell of ``notebooks/<stage>.ipynb``.

    Returns:
        ``{name: {"inferred_type_name", "default", "help"}}`` from ``papermill.inspect_notebook``.
    """
    import papermill  # heavy import, only when checking

    nb = paths.NOTEBOOKS / f"{stage}.ipynb"
    if not nb.is_file():
        raise ParamsError(f"notebook {nb} does not exist")
    return dict(papermill.inspect_notebook(str(nb)))


def notebook_values(stage: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of every parameter a stage notebook declares, read from its namespace.

    A notebook passes ``globals()`` when it writes its provenance, so the record holds
    each key of its tagged ``parameters`` cell (in declaration order) as the run used it,
    never a retyped subset.

    Args:
        stage: full stage name, e.g. ``"02_train"``.
        namespace: the notebook's global names (``globals()``).

    Raises:
        ParamsError: the notebook is missing, or a declared parameter is not in ``namespace``.

    Example:
        >>> params.notebook_values("04_inference", globals())  # doctest: +SKIP
        {'model_name': 'demo_cnn', 'hop_s': 1.0, ...}
    """
    declared = notebook_parameters(stage)
    missing = [k for k in declared if k not in namespace]
    if missing:
        raise ParamsError(f"notebooks/{stage}.ipynb declares {', '.join(missing)} in its parameters "
                          f"cell, but the namespace given has no such name")
    return {k: namespace[k] for k in declared}


def load_stage_params(stage: str, *, profile: str | None = None,
                      overrides: Mapping[str, Any] | None = None,
                      check: bool = True) -> dict[str, Any]:
    """Resolve a stage's parameters: ``params/<stage>.yaml`` ← profile ← overrides.

    Args:
        stage: full stage name, e.g. ``"02_train"``.
        profile: profile name under ``params/profiles`` (``None``: none).
        overrides: last-word values (e.g. from the command line).
        check: verify every key is declared by the notebook's parameters cell.

    Raises:
        ParamsError: a file is missing/malformed, or a key is not declared by the notebook.
    """
    base_path = stage_file(stage)
    params = _read_yaml(base_path)
    sources = {k: f"params/{stage}.yaml" for k in params}
    prof = load_profile(profile).get(stage, {}) or {}
    for k, v in prof.items():
        params[k] = v
        sources[k] = f"params/profiles/{profile}.yaml"
    for k, v in (overrides or {}).items():
        params[k] = v
        sources[k] = "overrides"
    if check:
        declared = notebook_parameters(stage)
        for k in params:
            if k not in declared:
                raise ParamsError(
                    f"{sources[k]}: key {k!r} is not declared in the parameters cell of "
                    f"notebooks/{stage}.ipynb; declared keys: {', '.join(sorted(declared))}")
    return params


def params_hash(all_params: Mapping[str, Any]) -> str:
    """Stable short hash of resolved parameters (for matching outputs to runs)."""
    blob = json.dumps(all_params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
