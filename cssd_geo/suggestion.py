"""Where to label next: the pixels where a model is least certain, at least a window apart,
spread over the scene and over the predicted classes (``cssd-geo suggest``, QGIS
``cssd:suggest``). Labelled and added to the training labels, they teach the model most.

The model predicts the scene's class probabilities into a temporary GeoTIFF beside the output
(the usual chunked prediction: bounded memory, progress, cancel); that file is then read block
by block, and each block keeps only its least certain, already spaced pixels per predicted
class, so memory stays bounded on a scene of any size.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.transform
import xarray as xr

from .classes import ClassInfo
from .config import SuggestConfig
from .device import describe_device, resolve_device
from .io.vector import check_point_output, write_points
from .io.writers import PROBABILITY_NODATA, PROBABILITY_SCALE, side_outputs
from .model import CSSD, load_model
from .outputs import check_output
from .prediction import predict
from .progress import Progress

POOL = 10  # candidates kept per predicted class: this many times the points asked for
LABEL_FIELD = "label"  # the field of a suggestion that the analyst fills with the true class id


def uncertainty(p: np.ndarray, measure: str) -> np.ndarray:
    """Uncertainty 0..1 of class probabilities ``p`` [K, ...]: ``"margin"``, one minus the gap
    between the two likeliest classes; ``"entropy"``, the entropy divided by log K."""
    if measure == "margin":
        top = np.sort(p, axis=0)
        return 1.0 - (top[-1] - top[-2])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=0) / np.log(p.shape[0])


def spaced(rows: np.ndarray, cols: np.ndarray, spacing: int, limit: int,
           taken: list[tuple[int, int]] | None = None) -> list[int]:
    """Greedily, in the given order, up to ``limit`` positions at least ``spacing`` pixels
    (Chebyshev distance) from each other and from ``taken``; returns their indices."""
    kept: list[int] = []
    placed = np.array(taken or [], dtype=np.int64).reshape(-1, 2)
    for i in range(rows.size):
        if len(kept) >= limit:
            break
        if placed.size and np.max(np.abs(placed - (rows[i], cols[i])), axis=1).min() < spacing:
            continue
        kept.append(i)
        placed = np.vstack([placed, (rows[i], cols[i])])
    return kept


@dataclass
class Suggestions:
    """The suggested points, most uncertain first: scene rows and columns, predicted class
    index, its probability and the uncertainty; and where they were written."""

    path: str
    classes: list[ClassInfo]
    rows: np.ndarray
    cols: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    uncertainty: np.ndarray
    spacing: int

    def table(self) -> str:
        """The points, one line each."""
        lines = [f"{self.rows.size} points at least {self.spacing} pixels apart written to {self.path}",
                 f"{'rank':>4} {'row':>6} {'col':>6}  {'predicted':<24} {'confidence':>10} {'uncertainty':>11}"]
        for i in range(self.rows.size):
            lines.append(f"{i + 1:>4} {self.rows[i]:>6} {self.cols[i]:>6}  "
                         f"{self.classes[self.predicted[i]].name[:24]:<24} {self.confidence[i]:>10.3f} "
                         f"{self.uncertainty[i]:>11.3f}")
        lines.append(f"fill the {LABEL_FIELD!r} field of each point with its true class id and add the points "
                     "to the training labels")
        return "\n".join(lines)


def suggest(model: str | os.PathLike[str], scene: str | os.PathLike[str] | xr.DataArray,
            output: str | os.PathLike[str], config: SuggestConfig | None = None,
            progress: Progress | None = None) -> Suggestions:
    """Write the ``config.points`` most useful pixels to label next as points (see the module
    docstring): ranked by uncertainty, each with its predicted class and confidence and an
    empty ``label`` field."""
    import geopandas as gpd
    import pandas as pd

    config = config or SuggestConfig()
    config.validate()
    progress = progress or Progress()
    scene_path = os.fspath(scene) if not isinstance(scene, xr.DataArray) else scene.attrs.get("source")
    output = check_output(output, config.overwrite, inputs=(scene_path, os.fspath(model)))
    check_point_output(output)
    network: CSSD = load_model(model)
    spacing = config.spacing or network.window
    folder = os.path.dirname(os.path.abspath(output))
    with tempfile.TemporaryDirectory(prefix=f".{os.path.basename(output)}.probabilities-", dir=folder) as tmp:
        classes_path = os.path.join(tmp, "map.tif")
        predict(model, scene, classes_path, config.prediction(), _Inner(progress))
        progress.message(f"device: {describe_device(resolve_device(config.device), config.device)}")
        with rasterio.open(side_outputs(classes_path, ["probabilities"])["probabilities"]) as ds:
            grid_crs, transform = ds.crs, ds.transform
            pool = _candidates(ds, config, spacing, progress)
    rows, cols, predicted, confidence, score = _choose(pool, config.points, spacing)
    xs, ys = rasterio.transform.xy(transform, rows, cols, offset="center")
    frame = gpd.GeoDataFrame(
        {"rank": np.arange(1, rows.size + 1), "predicted_id": [network.classes[k].id for k in predicted],
         "predicted": [network.classes[k].name for k in predicted], "confidence": confidence,
         "uncertainty": score, LABEL_FIELD: pd.array([None] * rows.size, dtype="Int32")},
        geometry=gpd.points_from_xy(np.asarray(xs), np.asarray(ys)), crs=grid_crs)
    write_points(frame, output)
    return Suggestions(output, network.classes, rows, cols, predicted, confidence, score, spacing)


class _Inner(Progress):
    """The progress of the prediction behind the suggestions: its stages and messages, but
    not "map written to" a temporary file the user never sees (suggest names the device itself)."""

    def __init__(self, outer: Progress) -> None:
        self.outer = outer

    def stage(self, name: str, total: int) -> None:
        self.outer.stage(name, total)

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.outer.advance(steps, note)

    def message(self, text: str) -> None:
        if not text.startswith("map written to"):
            self.outer.message(text)

    def cancelled(self) -> bool:
        return self.outer.cancelled()


_Pool = dict[int, tuple[np.ndarray, ...]]  # class index -> (uncertainty, rows, cols, confidence), best first


def _candidates(ds: rasterio.io.DatasetReader, config: SuggestConfig, spacing: int, progress: Progress) -> _Pool:
    """Each predicted class's least certain pixels: per block, its spaced least certain pixels
    (at most ``points`` per class); over the blocks, the ``POOL * points`` best of them."""
    windows = [w for _, w in ds.block_windows(1)]
    progress.stage("choosing points", len(windows))
    keep = POOL * config.points
    pool: _Pool = {}
    for window in windows:
        raw = ds.read(window=window)
        valid = raw[0] != PROBABILITY_NODATA
        if valid.any():
            p = raw[:, valid].astype(np.float64) / PROBABILITY_SCALE
            score, predicted, confidence = uncertainty(p, config.measure), p.argmax(axis=0), p.max(axis=0)
            r, c = np.nonzero(valid)
            r, c = r + int(window.row_off), c + int(window.col_off)
            for k in np.unique(predicted):
                mine = np.flatnonzero(predicted == k)
                order = mine[np.lexsort((c[mine], r[mine], -score[mine]))][:keep]  # least certain first
                chosen = order[spaced(r[order], c[order], spacing, config.points)]
                merged = [np.concatenate([a, b]) for a, b in zip(
                    pool.get(int(k), (np.zeros(0),) * 4), (score[chosen], r[chosen], c[chosen], confidence[chosen]),
                    strict=True)]
                best = np.lexsort((merged[2], merged[1], -merged[0]))[:keep]
                pool[int(k)] = tuple(a[best] for a in merged)
        progress.advance(1)
        progress.check("suggestion")
    return pool


def _choose(pool: _Pool, points: int, spacing: int) -> tuple[np.ndarray, ...]:
    """Up to ``points`` candidates, a window apart, taken in turn from each predicted class
    (the class with the least certain candidate first), then ranked by uncertainty."""
    turns = sorted(pool, key=lambda k: (-pool[k][0][0], k))
    next_of = dict.fromkeys(turns, 0)
    taken: list[tuple[int, int]] = []
    picked: list[tuple[float, int, int, int, float]] = []
    while len(picked) < points and turns:
        for k in list(turns):
            score, rows, cols, confidence = pool[k]
            start = next_of[k]
            found = spaced(rows[start:], cols[start:], spacing, 1, taken)
            if not found:
                turns.remove(k)
                continue
            i = start + found[0]
            next_of[k] = i + 1
            taken.append((int(rows[i]), int(cols[i])))
            picked.append((float(score[i]), int(rows[i]), int(cols[i]), k, float(confidence[i])))
            if len(picked) == points:
                break
    picked.sort(key=lambda t: (-t[0], t[1], t[2]))
    score_, rows_, cols_, classes_, confidence_ = (np.array(v) for v in zip(*picked, strict=True)) if picked else \
        (np.zeros(0),) * 5
    return (rows_.astype(np.int64), cols_.astype(np.int64), classes_.astype(np.int64), confidence_.astype(np.float64),
            score_.astype(np.float64))
