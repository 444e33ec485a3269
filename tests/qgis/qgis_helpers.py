"""Paths and environments shared by the QGIS plugin tests."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "examples" / "indian_pines" / "indian_pines.tif"
FIELDS = ROOT / "examples" / "indian_pines" / "fields.shp"
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"  # Processing's Python side
if str(ROOT) not in sys.path:  # the plugin's parameter names (qgis_plugin.parameters)
    sys.path.append(str(ROOT))


def headless_env(config_dir: str) -> dict:
    """Variables for QGIS without a display and with a throw-away profile."""
    runtime = tempfile.mkdtemp(prefix="xdg-")
    os.chmod(runtime, 0o700)
    # GDAL_PAM_ENABLED=NO: QGIS must not leave .aux.xml statistics beside the example scene
    return {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": runtime, "QGIS_CUSTOM_CONFIG_PATH": config_dir,
            "GDAL_PAM_ENABLED": "NO"}


def cli_executable() -> str:
    """The cssd-geo of the project's main environment (.venv), else of this one."""
    for candidate in (ROOT / ".venv" / "bin" / "cssd-geo", Path(sys.prefix) / "bin" / "cssd-geo"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("cssd-geo")
    if not found:
        pytest.skip("no cssd-geo executable to test the executable backend with")
    return found
