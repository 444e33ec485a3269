"""CSSD in the QGIS Processing toolbox: train, predict and evaluate with cssd-geo.

QGIS calls :func:`classFactory` when it loads the plugin."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugin import CssdPlugin


def classFactory(iface: Any) -> CssdPlugin:  # noqa: N802 (the name QGIS looks for)
    """The plugin object QGIS asks for."""
    from .plugin import CssdPlugin

    return CssdPlugin(iface)
