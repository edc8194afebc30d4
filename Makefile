# Two commands matter: `make demo` and `make test`. Both set everything up from nothing and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STQA := $(VENV)/bin/stqa
CSRC := $(shell find csrc -type f 2>/dev/null) CMakeLists.txt pyproject.toml
# The editable install maps every module to its file: a module added, moved or removed needs a reinstall.
PYFILES := $(shell find stqa server -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: all setup build test check-install lint demo web model bench proto clean

all: test

# 1. The environment: torch pinned to the local CPU wheel (constraints.txt), build tools, runtime, test and web deps.
$(VENV)/.deps: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0 "scikit-build-core>=1.0" "pybind11>=2.12" ninja
	$(PIP) install -q -c constraints.txt -r <($(PY) -c "import tomllib;d=tomllib.load(open('pyproject.toml','rb'))['project'];print('\n'.join(d['dependencies']+d['optional-dependencies']['test']+d['optional-dependencies']['web']))")
	touch $@

# 2. The package and its C++ extension, built against that torch (no build isolation: it would fetch another torch).
$(VENV)/.built: $(VENV)/.deps $(CSRC) $(PYFILES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.built

build: $(VENV)/.built

test: $(VENV)/.built
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q tests
	$(PY) scripts/check_install.py

# A regular install, as a user does it: sdist -> wheel from the sdist -> fresh virtualenv -> the CLI from
# outside the tree (scripts/check_install.py says what it checks). About a minute.
check-install: $(VENV)/.built
	$(PY) scripts/check_install.py

lint: $(VENV)/.deps
	$(VENV)/bin/ruff check .

proto: $(VENV)/.deps
	$(PY) scripts/gen_proto.py

demo: $(VENV)/.built
	$(PY) scripts/demo.py

# The page in the browser: the bundled model's server in-process, the page on http://127.0.0.1:7860 (Ctrl-C stops).
web: $(VENV)/.built
	$(STQA) web

# The bundled default model: generate data/synth24000 if absent, train (resuming an interrupted run), copy the
# best-on-validation checkpoint into the package, and score it on the synthetic test split.
MODEL_RUN := runs/synth24000
model: $(VENV)/.built
	$(STQA) train --preset synthetic --generate --out $(MODEL_RUN) $$(test -f $(MODEL_RUN)/last/config.json && echo --resume)
	rm -rf stqa/assets/default.new && cp -r $(MODEL_RUN)/best stqa/assets/default.new
	rm -rf stqa/assets/default && mv stqa/assets/default.new stqa/assets/default
	$(STQA) evaluate --data data/synth24000 --split test --out results/synth24000 \
		--baseline random --baseline majority --baseline text-only

bench: $(VENV)/.built
	$(PY) benchmarks/bench_ops.py

clean:
	rm -rf build $(VENV) .pytest_cache
