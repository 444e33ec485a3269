"""cssd-geo: few-shot hyperspectral land-cover mapping with CSSD (Central Spectral Self-Distillation).

The public API::

    scene = cssd_geo.open_scene("scene.tif")
    cssd_geo.train("scene.tif", "fields.shp", "model.cssd")
    model = cssd_geo.load_model("model.cssd")
    cssd_geo.predict("model.cssd", "scene.tif", "landcover.tif")
    cssd_geo.evaluate("landcover.tif", "fields.shp")
"""
__version__ = "0.1.0"

from .config import EvaluateConfig, PredictConfig, TrainConfig
from .errors import Cancelled, CssdError
from .io.scene import open_scene
from .metrics import evaluate
from .model import ModelConfig, load_model
from .prediction import predict
from .progress import Progress
from .train import train

__all__ = ["open_scene", "load_model", "train", "predict", "evaluate", "TrainConfig", "ModelConfig",
           "PredictConfig", "EvaluateConfig", "CssdError", "Cancelled", "Progress", "__version__"]
