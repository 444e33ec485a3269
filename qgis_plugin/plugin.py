"""The plugin object: registers the CSSD Processing provider, nothing else."""
from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import CssdProvider


class CssdPlugin:
    """Adds the "CSSD" provider to the Processing toolbox while the plugin is loaded."""

    def __init__(self, iface: Any = None) -> None:  # QgisInterface; None under qgis_process
        self.iface = iface
        self.provider: CssdProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS plugin API)
        self.provider = CssdProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
