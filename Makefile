# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment (.venv) when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# pip takes torch/torchvision from this machine's disk; uv/poetry would download GBs.
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: demo test test-e2e test-readme install clean bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Fine-tunes ImageNet EfficientNet-Lite0 on scikit-learn's digits (ships in the wheel), offline.
# --overwrite: a second `make demo` replaces runs/demo (fit refuses an existing run folder otherwise).
demo: $(VENV)/.installed
	test -d demo_data/digits || $(PY) -m tuneforge.core.data.samples digits demo_data/digits
	$(VENV)/bin/tuneforge fit --data demo_data/digits --model efficientnet_lite0 --image-size 64 \
		--epochs 5 --lr 2e-3 --warmup-epochs 0.3 --augment crop=0.125 --out runs/demo --overwrite
	@echo "Report: runs/demo/report.html   Model bundle: runs/demo/model"
	$(VENV)/bin/tuneforge predict runs/demo demo_data/digits/test/7 --top-k 1 | head -3

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-e2e: $(VENV)/.installed   # the longest end-to-end runs (several processes, whole examples; ~5 min quiet)
	$(PY) -m pytest -q -m e2e

test-readme: $(VENV)/.installed   # every README command and snippet, run literally on small data (~6 min quiet)
	$(PY) -m pytest -q -m readme tests/test_readme.py

bench: $(VENV)/.installed
	$(PY) benchmarks/foundation.py

clean:
	rm -rf runs demo_data
