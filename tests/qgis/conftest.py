"""QGIS for the plugin tests: a headless QgsApplication with Processing and the CSSD
provider, and a small model trained once on the example scene. The tests skip where QGIS's
Python bindings are absent (see test_plugin.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from qgis_helpers import FIELDS, QGIS_PLUGINS, ROOT, SCENE, cli_executable, headless_env

from qgis_plugin import parameters as params


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    from qgis.core import QgsApplication

    os.environ.update(headless_env(str(tmp_path_factory.mktemp("qgis-profile"))))
    os.environ.setdefault("CSSD_GEO_BACKEND", "inprocess")  # opt in: these tests run cssd_geo in QGIS's Python
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    sys.path[:0] = [QGIS_PLUGINS, str(ROOT)]
    from processing.core.Processing import Processing

    Processing.initialize()
    from qgis_plugin.plugin import CssdPlugin

    plugin = CssdPlugin()
    plugin.initProcessing()
    yield app
    plugin.unload()
    # no exitQgis(): QGIS tears down at process exit, and layers still referenced by Python
    # at exitQgis() crash it


@pytest.fixture(scope="session")
def trained_model(qgis_app, tmp_path_factory) -> Path:
    """A small model trained through cssd:train (in QGIS's Python)."""
    import processing

    out = tmp_path_factory.mktemp("model") / "model.cssd"
    processing.run("cssd:train", {params.INPUT: str(SCENE), params.LABELS: str(FIELDS), params.CLASS_FIELD: "class_id",
                                  params.SHOTS: 3, params.EPOCHS: 2, params.SEED: 0, params.DEVICE: "cpu",
                                  params.OUTPUT: str(out)})
    return out


@pytest.fixture
def backend_env(monkeypatch):
    """Select the backend by name: 'inprocess' or 'executable' (another environment's CLI)."""

    def select(name: str) -> None:
        monkeypatch.setenv("CSSD_GEO_BACKEND", name)
        if name == "executable":
            monkeypatch.setenv("CSSD_GEO_EXECUTABLE", cli_executable())

    return select
