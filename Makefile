# Two commands for a fresh clone:  make demo  (train + predict + evaluate on the example scene)
#                                  make test  (the test suite)
# Both create .venv and install what they need. torch is installed first at TORCH_SPEC:
# torch==2.13.0 is the CPU build on the project's machines; a GPU user may pass
# TORCH_SPEC=torch (or any CUDA build) to get CUDA torch the normal way.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO := demo-output
SCENE := examples/indian_pines/indian_pines.tif
FIELDS := examples/indian_pines/fields.shp

# The QGIS plugin's tests run in real QGIS when its Python bindings are installed
# (apt-get install qgis python3-qgis): in .venv-qgis, made from QGIS's Python with its system
# packages visible. numpy<2 and attrs>=23.2 keep Debian's GDAL bindings and affine working there.
QGIS_PYTHON ?= /usr/bin/python3
QGIS_VENV ?= .venv-qgis

.PHONY: demo test lint test-qgis plugin venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	mkdir -p $(DEMO)
	$(BIN)/cssd-geo train $(SCENE) --labels $(FIELDS) --shots 16 --seed 0 -o $(DEMO)/model.cssd --overwrite
	$(BIN)/cssd-geo predict $(DEMO)/model.cssd $(SCENE) -o $(DEMO)/landcover.tif \
		--quicklook $(DEMO)/landcover.png --overwrite
	$(BIN)/cssd-geo evaluate $(DEMO)/landcover.tif --labels $(FIELDS) --exclude-training $(DEMO)/model.cssd \
		--json $(DEMO)/metrics.json

# the gate that runs before the tests: ruff (style, import order, pyupgrade, bugbear, docstrings)
# and mypy with untyped definitions disallowed; settings in pyproject.toml
LINTED := cssd_geo qgis_plugin tests benchmarks tools examples

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m pytest -q
	@if $(QGIS_PYTHON) -c "import qgis.core" 2>/dev/null; then $(MAKE) --no-print-directory test-qgis; \
	else echo "QGIS plugin tests skipped: QGIS is not installed (apt-get install qgis python3-qgis)"; fi

$(QGIS_VENV)/.installed: pyproject.toml
	$(QGIS_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/python -m pip install --quiet "numpy<2" "attrs>=23.2" "$(TORCH_SPEC)"
	$(QGIS_VENV)/bin/python -m pip install --quiet -e ".[test]" "numpy<2" "attrs>=23.2"
	touch $@

test-qgis: venv $(QGIS_VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(QGIS_VENV)/bin/python -m pytest -q -rP -p no:cacheprovider tests/qgis

# the plugin zip carries the cssd-geo wheel, built with the venv's pip
plugin: venv
	$(BIN)/python tools/build_qgis_plugin.py dist/cssd_geo_qgis.zip

clean:
	rm -rf $(VENV) $(QGIS_VENV) $(DEMO) dist *.egg-info
