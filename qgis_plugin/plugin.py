"""The plugin object: registers the CSSD Processing provider and, in the QGIS window, offers to
install the CSSD runtime when there is none yet."""
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
        if self.iface is not None:
            self.offer_runtime()

    def offer_runtime(self) -> None:
        """A message bar entry with an Install button while no cssd-geo can run the algorithms."""
        from qgis.core import Qgis, QgsProcessingException
        from qgis.PyQt.QtWidgets import QPushButton

        from . import backend

        try:
            backend.choose()
            return  # a runtime, an executable or the in-QGIS route is there
        except QgsProcessingException:
            pass
        bar = self.iface.messageBar()
        message = bar.createMessage("CSSD", "the CSSD algorithms need their runtime (cssd-geo and torch), "
                                            "installed once into this QGIS profile")
        button = QPushButton("Install…")
        button.clicked.connect(self.open_installer)
        message.layout().addWidget(button)
        bar.pushWidget(message, Qgis.Info)

    @staticmethod
    def open_installer() -> None:
        """The dialog of cssd:installruntime."""
        import processing

        processing.execAlgorithmDialog("cssd:installruntime")

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
