# The two README commands are `make run` and `make test`; both install first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The extras to install (pip) and whose system packages to apt-get: one table, visrl_envs/sysdeps.py.
EXTRAS ?= all
APT_PACKAGES := $(shell $(PYTHON) visrl_envs/sysdeps.py apt $(EXTRAS))
STAMP := .install.stamp
comma := ,

.PHONY: install run test test-slow bench bench-vlm bench-grpo learning grpo-learning lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile visrl_envs/sysdeps.py
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	fi
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[$(subst $(eval) ,$(comma),$(EXTRAS)),dev]'
	@touch $(STAMP)

run: install
	$(PYTHON) -m benchmarks.run_baselines

test: install
	SDL_VIDEODRIVER=dummy $(PYTHON) -m pytest -q -n 2 --timeout 600

test-slow: install
	SDL_VIDEODRIVER=dummy $(PYTHON) -m pytest -q -m slow -n 2 --timeout 1800

bench: install
	$(PYTHON) -m benchmarks.throughput
	$(PYTHON) -m benchmarks.shared_memory

bench-vlm: install
	$(PYTHON) -m benchmarks.vlm_rollout

bench-grpo: install
	$(PYTHON) -m benchmarks.grpo_step

learning: install
	$(PYTHON) -m benchmarks.learning

grpo-learning: install
	$(PYTHON) -m benchmarks.grpo_learning

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy visrl_envs agents benchmarks --ignore-missing-imports

clean:
	rm -f $(STAMP)
