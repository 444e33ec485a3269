"""Steps chained for the common case: train on the labelled fields, then map the scene
(``cssd-geo map``, QGIS ``cssd:map``)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import xarray as xr

from .config import MapConfig
from .outputs import check_output
from .prediction import PredictResult, predict
from .progress import Progress
from .training import TrainResult, train


@dataclass
class MapResult:
    """What a map run produced: the training (its ``model_path`` is None when the model was not
    kept) and the prediction."""

    training: TrainResult
    prediction: PredictResult
    model_path: str | None


def map_scene(scene: str | os.PathLike[str] | xr.DataArray, labels: str | os.PathLike[str],
              output: str | os.PathLike[str], config: MapConfig | None = None,
              progress: Progress | None = None) -> MapResult:
    """Train CSSD on ``scene`` from ``labels`` and write the class map of ``scene`` to
    ``output``; the model is kept at ``config.model_output`` when given (else it lives in a
    temporary folder beside the map, deleted at the end). The map's path is checked before
    training starts, so a bad output path costs nothing."""
    config = config or MapConfig()
    progress = progress or Progress()
    config.validate()
    scene_path = os.fspath(scene) if not isinstance(scene, xr.DataArray) else scene.attrs.get("source")
    output = check_output(output, config.training.overwrite, inputs=(scene_path, os.fspath(labels)))
    if config.model_output:
        trained = train(scene, labels, config.model_output, config.training, progress)
        return MapResult(trained, predict(trained.model_path, scene, output, config.prediction(), progress),
                         trained.model_path)
    folder = os.path.dirname(os.path.abspath(output))
    with tempfile.TemporaryDirectory(prefix=f".{os.path.basename(output)}.model-", dir=folder) as tmp:
        trained = train(scene, labels, os.path.join(tmp, "model.cssd"), config.training, progress)
        predicted = predict(trained.model_path, scene, output, config.prediction(), progress)
    return MapResult(trained, predicted, None)
