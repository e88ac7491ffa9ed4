# The set-up commands: `make serve`, `make test` (both tiers), `make test-fast` (no models,
# servers or browser: seconds) and `make lint`. Each installs what it needs, idempotently.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMPS := .stamps
APT_PACKAGES := ffmpeg espeak-ng chromium redis-server
# llama.cpp built for any x86-64 with AVX2: native builds crash on some CPUs (AMX).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test test-fast lint deps clean

serve: $(STAMPS)/venv
	$(VENV)/bin/avatar serve

PYTEST := HF_HUB_OFFLINE=1 ORT_DISABLE_TELEMETRY=1 $(VENV)/bin/python -m pytest

# Every test, slow ones included (models, servers, the browser; see pyproject's markers).
test: $(STAMPS)/dev
	$(PYTEST) $(PYTEST_ARGS)

# The fast tier: what needs no model, server, subprocess or browser.
test-fast: $(STAMPS)/dev
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMPS)/dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src/realtime_avatar

deps: $(STAMPS)/dev

# Re-checked when this file changes (a package added here reaches machines set up before);
# the venv only needs it done first (order-only), so a re-check does not rebuild the venv.
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@touch $@

# The runtime: everything `avatar serve` and `avatar say` need, under the verified pins.
# pipecat-ai comes --no-deps, for the end-of-turn model its wheel ships (smart-turn v3.2
# ONNX, BSD-2-Clause): engine/endpointing.py reads the file and imports nothing of pipecat.
$(STAMPS)/venv: pyproject.toml constraints.txt | $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "pip>=24,<26"
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e .
	$(VENV)/bin/python -m pip install -q --no-deps pipecat-ai==1.14.0
	@touch $@

# Tests add the evaluation instruments (torch pinned first: a bare requirement pulls a CUDA
# build), llama.cpp's server (built from source, ~8 min once) and the linters;
# webrtcvad-wheels replaces webrtcvad, whose import needs pkg_resources.
$(STAMPS)/dev: $(STAMPS)/venv pyproject.toml constraints.txt
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[eval,dev,pipecat,xtts]"
	@# PyPI's torchaudio is a CUDA build: on a CPU torch its extension cannot load (xtts needs none of it)
	@$(VENV)/bin/python -c "import torchaudio" 2>/dev/null || rm -f $(VENV)/lib/python3.11/site-packages/torchaudio/lib/_torchaudio*.so
	$(VENV)/bin/python -m pip install -q --no-deps pipecat-ai==1.14.0
	$(VENV)/bin/python -m pip install -q --force-reinstall --no-deps webrtcvad-wheels==2.0.14.post1
	@touch $@

clean:
	rm -rf $(VENV) $(STAMPS)
