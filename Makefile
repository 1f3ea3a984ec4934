# diffuse-pipeline: `make demo` and `make test` work on a fresh machine with Python >= 3.11 and git.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint format clean goldens

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pipeline.kernels.warmup
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the package, its dependencies and compiled kernels
	@$(BIN)/python -m pipeline.kernels.warmup  # again after the sources changed: kernels for them (~1 s if none did)
	@$(BIN)/python -m compileall -q pipeline  # bytecode, which PYTHONDONTWRITEBYTECODE=1 would never write (-0.05 s a command)

demo: $(STAMP)  ## simulate a small dataset, integrate, correct, export, plot (output in demo-output/)
	$(BIN)/diffuse demo --outdir demo-output --overwrite

test: $(STAMP)  ## the whole test suite (SLURM tests skip when no SLURM answers)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not slurm"

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/ruff format --check pipeline tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format pipeline tests benchmarks
	$(BIN)/ruff check --fix pipeline tests benchmarks

goldens:  ## regenerate tests/data from mdx2 1.0.5 (needs ../shared/refkit; see tests/data/README.md)
	bash tests/data/make_goldens.sh

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache build *.egg-info
