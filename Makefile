# Two entry points: `make demo` and `make test`. Each sets up .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv system-packages bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Real services the tests talk to (Prometheus for metric checks), from Debian's packages.
system-packages:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus missing: run 'sudo apt-get install -y prometheus' (its tests are skipped until then)"; fi; }

demo: $(STAMP)
	$(VENV)/bin/afterfix demo

test: $(STAMP) system-packages
	$(PY) -m pytest -q -rs -p no:cacheprovider

bench: $(STAMP)
	@ls benchmarks/*.py | sed 's/^/  $(PY) /'

clean:
	rm -rf $(VENV) traces/store traces/demo
