# Two entry points for a fresh machine: `make demo` (set up + run the main job) and `make test` (set up + run tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup browser xvfb napari-test demo test lint typecheck check bench clean app

$(BIN)/fmscope: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,text,sam,app,bioimageio,napari]"
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-deps --no-build-isolation sam2==1.1.0
	touch $(BIN)/fmscope

setup: $(BIN)/fmscope

# The web app's browser tests drive Debian's headless Chromium (never `playwright install`, which downloads).
CHROMIUM := /usr/bin/chromium-headless-shell
browser:
	@test -x $(CHROMIUM) || test -x /usr/bin/chromium || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null) \
	  || echo "could not install chromium-headless-shell (apt-get needs root and the Debian mirror): the browser tests will be skipped"; }

# The napari widget's tests draw through OpenGL: a virtual X server (Xvfb) and the xcb libraries Qt needs.
XVFB_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 \
  libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 libdbus-1-3 libfontconfig1
xvfb:
	@command -v xvfb-run >/dev/null || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(XVFB_PACKAGES) >/dev/null) \
	  || echo "could not install Xvfb (apt-get needs root and the Debian mirror): the napari widget tests will be skipped"; }

# The widget's pass: napari's and pytest-qt's pytest plugins (blocked in the main pass), under Xvfb when present.
NAPARI_PYTEST := $(BIN)/python -m pytest -q -m napari -p napari -p pytest-qt tests/test_napari_widget.py
napari-test: setup xvfb
	@if command -v xvfb-run >/dev/null; then \
	  QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" $(NAPARI_PYTEST); else $(NAPARI_PYTEST); fi

app: setup
	$(BIN)/fmscope app --open

demo: setup
	$(BIN)/fmscope quickstart --out quickstart_out --overwrite

# CI runs this (.ci/run): lint, type-check, then the test suite.
test: setup browser xvfb
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory napari-test

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

bench: setup
	$(BIN)/python benchmarks/bench_percentiles.py
	$(BIN)/python benchmarks/real_data_otsu.py

clean:
	rm -rf $(VENV) quickstart_out .pytest_cache .mypy_cache .ruff_cache
