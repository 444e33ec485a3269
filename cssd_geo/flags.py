"""The command-line flag of every option of the cssd-geo steps (the field names of the config
dataclasses in :mod:`cssd_geo.config`): the one table that the CLI parser declares its options
with and that the QGIS plugin's executable backend writes its command lines with.

Most options are ``--`` plus the field name with dashes; the exceptions are listed here and
nowhere else. Standard library only: the plugin loads this file in QGIS's Python without
importing the cssd_geo package (torch and the GDAL wheels must stay out of the QGIS process),
and its zip carries a copy (tools/build_qgis_plugin.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RENAMED = {"learning_rate": "--lr", "json_path": "--json", "plot_path": "--plot", "csv_path": "--csv"}
# options that are on by default: the flag turns them off
NEGATED = {"product_masks": "--no-product-masks", "auxiliary": "--no-auxiliary"}


def flag(name: str) -> str:
    """The flag of option ``name`` (a config field name)."""
    return NEGATED.get(name) or RENAMED.get(name) or "--" + name.replace("_", "-")


def arguments(options: Mapping[str, Any]) -> list[str]:
    """Command-line arguments that give ``options`` (field name -> value). None leaves an option
    at its default; a switch (True/False) is written only when it differs from its default."""
    args: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        if name in NEGATED:
            args += [] if value else [NEGATED[name]]
        elif isinstance(value, bool):
            args += [flag(name)] if value else []
        else:
            args += [flag(name), str(value)]
    return args
