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

.PHONY: demo test venv clean

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

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info
