# Two entry points: `make demo` and `make test`. Each sets up .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv system-packages bench clean

# One part is compiled and optional (setup.py: the OTLP fast paths; without them ingest is about
# 1.5x slower and stores the same rows). apt-get provides a C compiler and Python's headers when
# they are missing (as root); otherwise the install goes on without the fast paths and says so.
$(STAMP): pyproject.toml setup.py $(wildcard kernel_ext/afterfix/ingest/*.[ch])
	@command -v cc >/dev/null 2>&1 && $(PYTHON) -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev python3-dev >/dev/null; \
	  else echo "afterfix: no C compiler or Python headers: installing without the compiled OTLP fast path (file ingest about 1.5x slower); for it run 'sudo apt-get install -y gcc python3-dev' and 'make clean venv'"; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Real programs the tests talk to, from Debian's packages: Prometheus (scrapes the simulator's
# /metrics), kubectl (acts on the Kubernetes API simulator), Chromium (Playwright drives
# JupyterLab in it headless; Playwright's own browser download is not used) and PostgreSQL (the
# team store's catalog; the tests start their own cluster on loopback, tests/teamstore.py).
SYSTEM_PACKAGES := prometheus:prometheus kubectl:kubernetes-client chromium:chromium pg_ctlcluster:postgresql

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing: run 'sudo apt-get install -y$$missing' (their tests fail until then)"; exit 1; fi; fi

demo: $(STAMP)
	$(VENV)/bin/afterfix demo

test: $(STAMP) system-packages
	$(PY) -m pytest -q -rs -p no:cacheprovider --durations=20

bench: $(STAMP)
	@ls benchmarks/*.py | sed 's/^/  $(PY) /'

clean:
	rm -rf $(VENV) traces/store traces/demo build kernel_ext/afterfix/ingest/*.so
