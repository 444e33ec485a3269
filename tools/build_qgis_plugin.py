"""Build the zip that QGIS installs (Plugins > Manage and Install Plugins > Install from ZIP):
the qgis_plugin/ folder without caches. Usage: python tools/build_qgis_plugin.py [OUT.zip]"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "qgis_plugin"


def build(out: Path) -> Path:
    """Write the plugin zip to ``out`` (its top folder is qgis_plugin/, the plugin's name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                z.write(path, path.relative_to(ROOT).as_posix())
    return out


if __name__ == "__main__":
    target = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist" / "cssd_geo_qgis.zip")
    print(f"plugin zip written to {target}")
