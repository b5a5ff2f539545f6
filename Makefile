# Set-up on a fresh machine is part of each target: a venv in .venv with the
# package (editable) and its dev extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: demo demo-live test bench clean

# The demo twin, as fast as possible; the viewer shows it in a window where a display
# exists and writes out/demo/pump_testbed.png where none does.
demo: $(VENV)/.installed
	$(VENV)/bin/twinstage demo --out $(OUT) --view

# The same in real time behind the websocket bridge, until Ctrl-C: it prints the browser URL
# (http://127.0.0.1:8765/?token=...) and a Python snippet with freshly generated tokens.
demo-live: $(VENV)/.installed
	$(VENV)/bin/twinstage demo --out $(OUT) --serve 8765 --view

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

$(VENV)/.installed: pyproject.toml system-packages.txt
	scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) out .pytest_cache
