"""cssd-geo: few-shot hyperspectral land-cover mapping with CSSD (Central Spectral Self-Distillation).

The public API::

    scene = cssd_geo.open_scene("scene.tif")
    cssd_geo.train("scene.tif", "fields.shp", "model.cssd")
    model = cssd_geo.load_model("model.cssd")
    cssd_geo.predict("model.cssd", "scene.tif", "landcover.tif")
    cssd_geo.map_scene("scene.tif", "fields.shp", "landcover.tif")   # both steps in one
    cssd_geo.suggest("model.cssd", "scene.tif", "next.gpkg")          # where to label next
    cssd_geo.evaluate("landcover.tif", "fields.shp")
    cssd_geo.draw_sample("landcover.tif", "sample.gpkg")     # points for an analyst to label
    cssd_geo.estimate_area("landcover.tif", "sample.gpkg")   # areas and accuracies with 95 % intervals
"""
__version__ = "0.1.0"

from .assessment import draw_sample, estimate_area
from .config import AreaConfig, EvaluateConfig, MapConfig, PredictConfig, SampleConfig, SuggestConfig, TrainConfig
from .errors import Cancelled, CssdError
from .io.scene import open_scene
from .metrics import evaluate
from .model import ModelConfig, load_model
from .prediction import predict
from .progress import Progress
from .suggestion import suggest
from .train import train
from .workflow import map_scene

__all__ = ["open_scene", "load_model", "train", "predict", "map_scene", "suggest", "evaluate", "draw_sample",
           "estimate_area", "TrainConfig", "ModelConfig", "PredictConfig", "MapConfig", "SuggestConfig",
           "EvaluateConfig", "SampleConfig", "AreaConfig",
           "CssdError", "Cancelled", "Progress", "__version__"]
