"""cssd-geo: few-shot hyperspectral land-cover mapping with CSSD (Central Spectral Self-Distillation).

The public API::

    scene = cssd_geo.open_scene("scene.tif")
    cssd_geo.train("scene.tif", "fields.shp", "model.cssd")
    model = cssd_geo.load_model("model.cssd")
    cssd_geo.predict("model.cssd", "scene.tif", "landcover.tif")
    cssd_geo.predict_array("model.cssd", cssd_geo.open_scene("scene.tif"))   # lazy xarray Dataset
    cssd_geo.map_scene("scene.tif", "fields.shp", "landcover.tif")   # both steps in one
    cssd_geo.suggest("model.cssd", "scene.tif", "next.gpkg")          # where to label next
    cssd_geo.evaluate("landcover.tif", "fields.shp")
    cssd_geo.draw_sample("landcover.tif", "sample.gpkg")     # points for an analyst to label
    cssd_geo.estimate_area("landcover.tif", "sample.gpkg")   # areas and accuracies with 95 % intervals
"""
__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from .config import (
    AreaConfig,
    EvaluateConfig,
    MapConfig,
    ModelConfig,
    PredictConfig,
    SampleConfig,
    SuggestConfig,
    TrainConfig,
)
from .errors import Cancelled, CssdError
from .progress import Progress

# the steps, imported on first use: the configs above need neither torch nor GDAL, so
# ``cssd-geo --help`` and a bad argument answer at once
_STEPS = {"open_scene": "io.scene", "load_model": "model", "train": "training", "predict": "prediction",
          "predict_array": "prediction", "map_scene": "workflow", "suggest": "suggestion", "evaluate": "metrics",
          "draw_sample": "assessment", "estimate_area": "assessment"}

if TYPE_CHECKING:
    from .assessment import draw_sample, estimate_area
    from .io.scene import open_scene
    from .metrics import evaluate
    from .model import load_model
    from .prediction import predict, predict_array
    from .suggestion import suggest
    from .training import train
    from .workflow import map_scene


def __getattr__(name: str) -> Any:
    if name in _STEPS:
        value = getattr(importlib.import_module(f".{_STEPS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cssd_geo' has no attribute {name!r}")


__all__ = ["open_scene", "load_model", "train", "predict", "predict_array", "map_scene", "suggest", "evaluate",
           "draw_sample", "estimate_area", "TrainConfig", "ModelConfig", "PredictConfig", "MapConfig", "SuggestConfig",
           "EvaluateConfig", "SampleConfig", "AreaConfig",
           "CssdError", "Cancelled", "Progress", "__version__"]
