# The two commands of the README: `make study` and `make test`. Both set up .venv first.
# PYTHON: the Python 3.11 that makes .venv (.ci/run passes it by absolute path).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# mamba-ssm and causal-conv1d are test oracles; without CUDA they only build with these flags.
NO_CUDA_BUILD := MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
                 CAUSAL_CONV1D_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE

.PHONY: install install-test study test clean-venv

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "discbench needs Python 3.11; $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=/path/to/python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel packaging

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	$(NO_CUDA_BUILD) $(BIN)/pip install --quiet --no-build-isolation mamba-ssm causal-conv1d
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Runs the default study (discbench.study.DEFAULT_STUDY, Ray Tune on this machine) and its report.
study: install
	$(BIN)/discbench run
	$(BIN)/discbench report $$($(BIN)/python -c "from discbench.study import DEFAULT_STUDY; print(DEFAULT_STUDY)")

# Runs the whole test suite (CPU; the Triton kernel through its interpreter).
test: install-test
	$(BIN)/python -m pytest -q -ra

clean-venv:
	rm -rf $(VENV)
