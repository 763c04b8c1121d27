# probe: two commands do all the set-up on a fresh machine:
#   make demo   installs, then probes the four networks of the classic initialization lab (the seed's Lab 1)
#   make test   installs, then runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU wheel of this torch lies on the team's machines; elsewhere pip fetches it (any torch>=2.1 works).
TORCH_SPEC ?= torch==2.13.0

.PHONY: help install demo test lint typecheck check bench bench-hf docs docs-examples clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## create .venv with torch, probe and the dev tools

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install  ## probe the 8-layer MLP of the classic initialization lab four ways side by side, then one layer by layer
	$(VENV)/bin/probe compare tiny:relu large:tanh xavier:tanh he:relu
	$(VENV)/bin/probe run configs/lab1_tiny_relu.yaml

# the suite runs in this many pytest-xdist workers (each a process; worksteal keeps a file's tests and
# its module fixtures together until a worker runs out of work); 0 runs it in this process, faster
# where the cores are already busy (two workers then cost about 30% more CPU: measured)
TEST_WORKERS ?= 2

test: install  ## run the test suite (in TEST_WORKERS processes)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: install  ## ruff lint + format check
	$(VENV)/bin/ruff check probe tests benchmarks scripts docs/snippets
	$(VENV)/bin/ruff format --check probe tests benchmarks scripts docs/snippets

typecheck: install  ## mypy
	$(VENV)/bin/mypy probe

check: lint typecheck test  ## everything CI should care about

bench: install  ## benchmarks: probe overhead vs. a bare forward/backward pass
	$(PY) benchmarks/run.py

bench-hf: install  ## Llama-2-7B-sized config layer by layer, forward and backward (<= 300 s, <= 4 GiB); 70B: CASES=70b
	$(PY) benchmarks/hf_layerwise.py $(or $(CASES),7b)

docs: install  ## build the documentation site into site/ (mkdocs, strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-examples: install  ## rerun every command shown in README.md and docs/ and rewrite its output block
	$(PY) scripts/docs_examples.py

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info site
