# Two commands a newcomer needs: `make demo` (the main job) and `make test` (the suite).
# Everything is set up from nothing on first use: .venv (CPU torch), the ComfyUI host, test models.
PY := .venv/bin/python
# Any python3 runs scripts/pick_python.py (standard library only).
BOOT_PY := $(shell command -v python3 || command -v python)
PYTEST := $(PY) -m pytest -c tests/pytest.ini --rootdir=tests

.PHONY: setup test test-fast test-slow test-host-0352 test-host-033 stress demo bench clean

setup:
	bash scripts/setup_env.sh

# The default suite: library, host integration on ComfyUI 0.3.75, the full-size numerics
# (marked slow), then the host tests again on ComfyUI 0.3.52 and 0.33.0, then the linter.
test: setup
	@echo "== ComfyUI 0.3.75: full suite =="
	$(PYTEST) tests -q
	@echo "== ComfyUI 0.3.52: host tests =="
	PM_COMFY_VERSION=0.3.52 $(PYTEST) tests -q -m "host and not slow"
	@$(MAKE) --no-print-directory test-host-033
	@echo "== ruff (pyproject.toml [tool.ruff]) =="
	$(PY) -m ruff check .

test-fast: setup
	$(PYTEST) tests -q -m "not slow"

test-host-0352: setup
	PM_COMFY_VERSION=0.3.52 $(PYTEST) tests -q -m "host and not slow"

# ComfyUI 0.33.0 comes from ../shared/hosts (or its upstream archive). Where neither can be had
# (provision_host.py exits 3) the run says so and is skipped; any other failure fails.
test-host-033:
	@echo "== ComfyUI 0.33.0: host tests =="
	@rc=0; $(PY) scripts/provision_host.py --version 0.33.0 >/dev/null || rc=$$?; \
	if [ $$rc = 3 ]; then echo "SKIPPED: ComfyUI 0.33.0 host tests: the host is not obtainable on this machine (see above)"; \
	elif [ $$rc != 0 ]; then exit $$rc; \
	else PM_COMFY_VERSION=0.33.0 $(PYTEST) tests -q -m "host and not slow"; fi

# The long reliability runs (tests/test_stress.py: 200 prompts through the real server, every hostile
# file over HTTP, repeated interrupts, long fuzzing). `PM_STRESS_SHORT=1 make stress` is the CI size.
stress: setup
	$(PYTEST) tests -q -m stress

# The main job. Inside a ComfyUI (custom_nodes/<pack>, or $COMFYUI_PATH) it runs with that ComfyUI's
# own Python and torch, so on its GPU: its venv/ or .venv/, the portable build's python_embeded, or the
# active venv/conda env (scripts/pick_python.py; `make demo PYTHON=/path/to/python` picks one). A bare
# clone falls back to the pack's CPU venv, built on first use.
demo:
	@py=$$($(BOOT_PY) scripts/pick_python.py $(if $(PYTHON),--python '$(PYTHON)')) || exit $$?; \
	if [ "$$py" = "$(CURDIR)/$(PY)" ]; then bash scripts/setup_env.sh || exit $$?; fi; \
	"$$py" scripts/demo.py $(ARGS)

# CPU benchmarks at full size on seeded random weights, side by side with ComfyUI core's PhotoMaker
# and a transformers implementation of the reference (tests/benchmarks/, not part of the suite).
# Prints the summary and writes tests/benchmarks/results/latest.{json,md}. About 10 minutes; run it on
# a quiet machine. `make bench ARGS=--quick` is a smoke run.
bench: setup
	$(PY) tests/benchmarks/run.py $(ARGS)

clean:
	rm -rf .venv .cache test-artifacts
