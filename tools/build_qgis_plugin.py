"""Build the zip that QGIS installs from Plugins > Manage and Install Plugins > Install from ZIP.

The zip holds the qgis_plugin/ folder without caches, its metadata.txt given the package's version,
cssd_geo/flags.py (the CLI's flags, standard library only) as qgis_plugin/flags.py, and the
cssd-geo wheel (built here with pip) in qgis_plugin/wheels/, which cssd:installruntime installs.
Usage: python tools/build_qgis_plugin.py [OUT.zip]"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "qgis_plugin"


def package_version() -> str:
    """``cssd_geo.__version__``, read from the source without importing the package (or torch)."""
    tree = ast.parse((ROOT / "cssd_geo" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise SystemExit("cssd_geo/__init__.py does not set __version__")


def metadata() -> str:
    """The plugin's metadata.txt with ``version=`` set from the package (the one version source)."""
    text = (PLUGIN / "metadata.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("version=")]
    return "\n".join(lines + [f"version={package_version()}"]) + "\n"


def wheel(folder: Path) -> Path:
    """Build the cssd-geo wheel (no dependencies) into ``folder`` with this Python's pip; the
    build/ folder setuptools leaves in the checkout is removed unless it was there before."""
    leftover = not (ROOT / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder),
                        str(ROOT)], check=True)
    finally:
        if leftover:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    found = sorted(folder.glob("cssd_geo-*.whl"))
    if len(found) != 1:
        raise SystemExit(f"pip wheel gave {[p.name for p in found]} in {folder}, not one cssd-geo wheel")
    return found[0]


def build(out: Path) -> Path:
    """Write the plugin zip to ``out`` (its top folder is qgis_plugin/, the plugin's name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(PLUGIN.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            name = path.relative_to(ROOT).as_posix()
            if path == PLUGIN / "metadata.txt":
                z.writestr(name, metadata())
            else:
                z.write(path, name)
        z.write(ROOT / "LICENSE", "qgis_plugin/LICENSE")  # the plugin repository asks for the licence in the zip
        # the CLI's flag table, which the executable backend writes command lines with (qgis_plugin/backend.py)
        z.write(ROOT / "cssd_geo" / "flags.py", "qgis_plugin/flags.py")
        with tempfile.TemporaryDirectory() as tmp:  # the package the runtime installs (qgis_plugin/runtime.py)
            built = wheel(Path(tmp))
            z.write(built, f"qgis_plugin/wheels/{built.name}")
    return out


if __name__ == "__main__":
    target = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist" / "cssd_geo_qgis.zip")
    print(f"plugin zip written to {target}")
