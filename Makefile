# Two commands for a newcomer on a fresh machine:
#   make demo   - install medbench in .venv and run the main job on the embedded data
#   make test   - install medbench[dev] in .venv and run the whole test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1
export MPLBACKEND ?= Agg

.PHONY: install demo test quick lint bench

$(VENV)/.installed-dev: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/medbench demo --out runs/demo

test: install
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

quick: install
	$(PY) -m pytest -n 2 --dist loadgroup -m 'not slow' --durations=10
