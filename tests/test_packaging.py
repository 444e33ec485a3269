"""What a user installs: every imported package declared, one version, the licence, type information."""
from __future__ import annotations

import ast
import configparser
import importlib.metadata as metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cssd_geo

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cssd_geo"


def _imported_top_levels(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"cssd_geo"}


def _requirements(extra: str | None = None) -> set[str]:
    declared = set()
    for requirement in metadata.requires("cssd-geo") or []:
        name, _, marker = requirement.partition(";")
        in_extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if (in_extra.group(1) if in_extra else None) == extra:
            declared.add(re.split(r"[<>=!~\[ ]", name.strip())[0].lower().replace("_", "-"))
    return declared


def test_every_imported_package_is_declared():
    distributions = metadata.packages_distributions()
    imported = _imported_top_levels(PACKAGE)
    needed = {d.lower().replace("_", "-") for module in imported for d in distributions.get(module, [module])}
    optional = {"distributed"}  # only predict --scheduler imports it, and says to install the [cluster] extra
    assert needed - optional <= _requirements(), "imported but not declared in pyproject's dependencies"
    assert optional <= _requirements("cluster")
    assert "distributed" not in _requirements()


def test_one_version_everywhere(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_qgis_plugin.py"), str(tmp_path / "p.zip")],
                   check=True, capture_output=True)
    with zipfile.ZipFile(tmp_path / "p.zip") as z:
        plugin = configparser.ConfigParser()
        plugin.read_string(z.read("qgis_plugin/metadata.txt").decode())
    assert plugin["general"]["version"] == cssd_geo.__version__ == metadata.version("cssd-geo")
    source = (ROOT / "qgis_plugin" / "metadata.txt").read_text().splitlines()
    assert not [line for line in source if line.startswith("version=")]  # the build writes it


def test_licence_file_matches_the_declared_licence():
    meta = metadata.metadata("cssd-geo")
    assert meta["License-Expression"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_package_ships_type_information():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (PACKAGE / "py.typed").exists()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["cssd_geo"]


def test_bare_pytest_collects_the_suite():
    pytest_command = [str(Path(sys.executable).with_name("pytest")), "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(pytest_command + ["tests/test_errors.py"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_errors.py::" in done.stdout
