# Two entry points (see README):
#   make study   install everything, then run the full study (dvc repro)
#   make test    install everything, then run the test suite
# Both are safe to run twice: installation is skipped while it is up to date.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The versions on the lab machines' disk (pip finds them there without a download); `make lock`
# resolves the lock with them.
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
# Exact versions of every dependency (torch included): what `make install` installs.
LOCK   := requirements.lock

.PHONY: install dataset study test bench lock clean-venv

install: $(STAMP) dataset

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev]'
	touch $(STAMP)

# Refresh requirements.lock after changing pyproject.toml or TORCH: resolve them in a fresh
# venv and pin what was installed (then `make install` installs exactly that).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet $(TORCH)
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' $(LOCK); .venv-lock/bin/python -m pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock

# System packages, where apt-get exists: Fashion-MNIST (the fetch stage falls back to the
# official mirrors elsewhere) and Chromium (the report's browser test; skipped without it).
dataset:
	@need=""; [ -d /usr/share/datasets/fashion-mnist ] || need="dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	if [ -z "$$need" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$need; \
	else echo "no apt-get: the fetch stage will download Fashion-MNIST; the browser test is skipped"; fi

study: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
