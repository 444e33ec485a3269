"""Accuracy of a class map against reference labels: OA, AA, kappa, per class, confusion."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import rasterio
import rasterio.transform
from rasterio.windows import Window
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix

from .classes import ClassInfo
from .config import EvaluateConfig
from .errors import CssdError
from .io.scene import Grid
from .io.vector import rasterize_labels, read_labels
from .io.writers import read_class_table
from .model import read_model_metadata
from .outputs import OutputSet, check_output, write_json
from .progress import Progress
from .tiling import group_by_block

MAP_BLOCK = 2048  # the map is read one block of this side at a time, only where labels are


@dataclass
class Evaluation:
    """Agreement of a map with reference labels. Accuracies are fractions in 0..1."""

    overall_accuracy: float
    average_accuracy: float
    kappa: float
    per_class: list[dict]
    confusion_matrix: list[list[int]]
    class_ids: list[int]
    pixels: int
    excluded_training_pixels: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON document written by ``--json``."""
        return {"overall_accuracy": self.overall_accuracy, "average_accuracy": self.average_accuracy,
                "kappa": self.kappa, "per_class": self.per_class, "confusion_matrix": self.confusion_matrix,
                "class_ids": self.class_ids, "pixels": self.pixels,
                "excluded_training_pixels": self.excluded_training_pixels, **self.extra}

    def table(self) -> str:
        """A plain-text report: summary figures, per-class accuracy, confusion matrix."""
        lines = [f"pixels evaluated   {self.pixels}",
                 f"overall accuracy   {100 * self.overall_accuracy:6.2f} %",
                 f"average accuracy   {100 * self.average_accuracy:6.2f} %",
                 f"kappa              {self.kappa:6.4f}", "",
                 f"{'id':>5}  {'class':<30} {'accuracy':>9} {'pixels':>8}"]
        for c in self.per_class:
            acc = "-" if c["accuracy"] is None else f"{100 * c['accuracy']:.2f} %"
            lines.append(f"{c['id']:>5}  {c['name'][:30]:<30} {acc:>9} {c['support']:>8}")
        lines += ["", "confusion matrix (rows: reference, columns: map; class ids)",
                  "      " + " ".join(f"{i:>6}" for i in self.class_ids)]
        lines += [f"{i:>6}" + " ".join(f"{v:>6}" for v in row)
                  for i, row in zip(self.class_ids, self.confusion_matrix, strict=True)]
        return "\n".join(lines)


def compute_metrics(reference: np.ndarray, predicted: np.ndarray, classes: list[ClassInfo]) -> Evaluation:
    """OA, AA (mean of per-class accuracies over classes present), Cohen's kappa, confusion."""
    if reference.size == 0:
        raise CssdError("no labelled pixel overlaps a valid map pixel; check that labels and map cover the same area")
    ids = [c.id for c in classes]
    cm = confusion_matrix(reference, predicted, labels=ids)
    support = cm.sum(axis=1)
    per_class = []
    present = []
    for k, c in enumerate(classes):
        acc = float(cm[k, k] / support[k]) if support[k] else None
        per_class.append({"id": c.id, "name": c.name, "accuracy": acc, "support": int(support[k])})
        if acc is not None:
            present.append(acc)
    return Evaluation(overall_accuracy=float(accuracy_score(reference, predicted)),
                      average_accuracy=float(np.mean(present)),
                      kappa=float(cohen_kappa_score(reference, predicted, labels=ids)),
                      per_class=per_class, confusion_matrix=cm.tolist(), class_ids=ids, pixels=int(reference.size))


def evaluate(map_path: str | os.PathLike, labels: str | os.PathLike, config: EvaluateConfig | None = None,
             progress: Progress | None = None) -> Evaluation:
    """Compare a class map with reference labels (rasterised on the map's grid)."""
    config = config or EvaluateConfig()
    progress = progress or Progress()
    map_path = os.fspath(map_path)
    if not os.path.exists(map_path):
        raise CssdError(f"{map_path}: map file not found; check the path")
    for path in (config.json_path, config.plot_path):
        if path:  # replaced when it exists, as a report is
            check_output(path, overwrite=True, inputs=(map_path, labels))
    try:
        with rasterio.open(map_path) as ds:
            grid = Grid(ds.crs, ds.transform, ds.height, ds.width)
            nodata = ds.nodata
    except rasterio.errors.RasterioIOError as exc:
        raise CssdError(f"{map_path}: not a raster GDAL can read; give a map written by 'cssd-geo predict'") from exc
    classes = read_class_table(map_path)
    if not classes:
        raise CssdError(f"{map_path}: has no class table (no cssd-geo tags or colour table); give a map "
                        "written by 'cssd-geo predict'")
    table = read_labels(labels, grid.crs, config.class_field, classes=classes)
    unknown = int((table.frame["_class_index"] < 0).sum())
    if unknown:
        progress.message(f"{unknown} label features have classes the map does not know; they were left out")
    raster = rasterize_labels(table, grid)
    for note in table.notes + raster.notes:
        progress.message(note)
    predicted = np.empty(len(raster), dtype=np.int64)
    with rasterio.open(map_path) as ds:
        for members in group_by_block(raster.rows, raster.cols, MAP_BLOCK):
            r, c = raster.rows[members], raster.cols[members]
            r0, c0 = int(r.min()), int(c.min())
            part = ds.read(1, window=Window(c0, r0, int(c.max()) - c0 + 1, int(r.max()) - r0 + 1))
            predicted[members] = part[r - r0, c - c0]
    mask = np.ones(len(raster), dtype=bool) if nodata is None else predicted != nodata
    excluded = 0
    if config.exclude_training:
        mask, excluded = _drop_training(mask, raster.rows, raster.cols, grid, config.exclude_training)
    lookup = np.array([c.id for c in classes])
    result = compute_metrics(lookup[raster.index[mask]], predicted[mask], classes)
    result.excluded_training_pixels = excluded
    with OutputSet() as outputs:
        if config.json_path:
            write_json(config.json_path, result.to_json(), outputs)
        if config.plot_path:
            from . import plots

            plots.confusion_matrix(result.confusion_matrix, [f"{c.id} {c.name}" for c in classes], config.plot_path,
                                   title=f"{os.path.basename(map_path)}: OA {100 * result.overall_accuracy:.2f} %, "
                                         f"kappa {result.kappa:.4f}", outputs=outputs)
    return result


def _drop_training(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: Grid,
                   model_path: str) -> tuple[np.ndarray, int]:
    """Remove the model's training pixels (stored as map coordinates) from ``mask``, one
    boolean per labelled pixel (scene ``rows``, ``cols``)."""
    pixels = read_model_metadata(model_path).get("training_pixels") or {}
    xs, ys = np.asarray(pixels.get("x", []), float), np.asarray(pixels.get("y", []), float)
    if xs.size == 0:
        return mask, 0
    train_rows, train_cols = (np.asarray(v, dtype=np.int64) for v in rasterio.transform.rowcol(grid.transform, xs, ys))
    inside = (train_rows >= 0) & (train_rows < grid.height) & (train_cols >= 0) & (train_cols < grid.width)
    trained = np.isin(rows * grid.width + cols, train_rows[inside] * grid.width + train_cols[inside])
    before = int(mask.sum())
    mask = mask & ~trained
    return mask, before - int(mask.sum())
