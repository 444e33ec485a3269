"""The "CSSD" Processing provider: its algorithms and its two settings (how to run
cssd-geo, and where its executable is)."""
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import (
    AreaAlgorithm,
    EvaluateAlgorithm,
    InstallRuntimeAlgorithm,
    MapAlgorithm,
    PredictAlgorithm,
    SampleAlgorithm,
    SuggestAlgorithm,
    TrainAlgorithm,
)
from .backend import BACKEND_SETTING, BACKENDS, EXECUTABLE_SETTING

ICON = os.path.join(os.path.dirname(__file__), "icon.png")


class CssdProvider(QgsProcessingProvider):
    """Provider id ``cssd``: algorithms ``cssd:train``, ``cssd:predict``, ``cssd:map``,
    ``cssd:suggest``, ``cssd:evaluate``, ``cssd:sample``, ``cssd:area`` and ``cssd:installruntime``."""

    def id(self) -> str:
        return "cssd"

    def name(self) -> str:
        return "CSSD"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return "CSSD few-shot hyperspectral classification"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def load(self) -> bool:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # Processing's Python side absent: the environment variables still work
            return super().load()
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(
            self.name(), BACKEND_SETTING, "Run cssd-geo (auto: the CSSD runtime or the executable below; in QGIS: "
            "QGIS's own Python, which must import cssd_geo)", BACKENDS[0], valuetype=Setting.SELECTION,
            options=list(BACKENDS)))
        ProcessingConfig.addSetting(Setting(
            self.name(), EXECUTABLE_SETTING, "cssd-geo executable (empty: the CSSD runtime's)", "",
            valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        return super().load()

    def unload(self) -> None:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        ProcessingConfig.removeSetting(BACKEND_SETTING)
        ProcessingConfig.removeSetting(EXECUTABLE_SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in (TrainAlgorithm(), PredictAlgorithm(), MapAlgorithm(), SuggestAlgorithm(),
                          EvaluateAlgorithm(), SampleAlgorithm(), AreaAlgorithm(), InstallRuntimeAlgorithm()):
            self.addAlgorithm(algorithm)

    def supportedOutputRasterLayerExtensions(self) -> list:  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list:  # noqa: N802
        return ["gpkg", "geojson"]  # what cssd-geo sample writes
