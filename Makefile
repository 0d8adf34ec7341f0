# make sweep: set up and run a real sweep on an embedded local Ray (~10 min on 2 CPU cores)
# make test:  set up and run the test suite
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup sweep test bench clean

setup: $(VENV)/.installed

# torch first, pinned: a CPU wheel here, the CUDA build on a GPU box; then the project and its test extras
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

sweep: setup
	$(BIN)/captcha-tune sweep --name demo
	$(BIN)/captcha-tune results experiments/demo --quiet  # the plots and report.md; sweep printed the leaderboard

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) experiments
