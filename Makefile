# speechjax: `make demo` trains the demo model (a head on Google's pretrained speech embedding
# pooled with a ResNet-20) on the embedded synthetic set; `make test` runs the tests.
# Both create the virtual environment in .venv on first use (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; sys.exit("speechjax needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: setup
	$(PY) main.py --config configs/speech_embedding_resnet.py --workdir runs/demo

# Two pytest workers (pytest-xdist): many tests run main.py in subprocesses, whose imports and
# data loading leave a core idle; two workers took the suite from 13.5 to 7 minutes here.
test: setup
	$(PY) -m pytest -n 2

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/models.py

clean:
	rm -rf runs .pytest_cache
