"""Settings chosen from the user's own labels: the pooled window P and the map's heads, by
leave-fields-out cross-validation, which also gives the expected accuracy on fields that gave
no label.

A *field* is a connected group of labelled pixels of one class (8-connected): a polygon, or
polygons and points that touch. Pixels of one field look alike and share their context, so a
fair estimate never trains and tests on the same field. The fields of each class are dealt
round-robin into ``FOLDS`` folds; each fold in turn is held out, short models are trained for
every candidate on the other folds' pixels (``shots`` per class at most, as the real run), and
the held-out fields' pixels more than ``GAP`` pixels from every training pixel score them.
A class with a single field is always trained on and never scored. With fewer than two
scorable classes there is nothing to cross-validate: the defaults stay and the result says so.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from .classes import ClassInfo
from .config import TrainConfig
from .progress import Progress
from .sampling import Samples

PATCHES = (3, 5, 7, 11)  # candidate sides of the pooled window
# candidate maps: the window classifier, the mean of both classifiers, the centre-spectrum classifier
HEADS = ("window", "both", "spectral")
FOLDS = 2  # leave-fields-out folds
STEP_SHARE = 0.5  # a cross-validation model takes this share of a full run's optimiser steps
GAP = 4  # held-out pixels within this many pixels of a fold's training pixel are not scored
HELD_OUT_PIXELS = 500  # at most this many held-out pixels score a fold (a seeded subset)
# a fold scored on fewer held-out pixels gives a rough figure and a noisy choice: the summary
# says so (Berlin benchmark, 5 shots: folds of 1-13 pixels, expected OA off by -17 to +38 points)
FEW_HELD_OUT = 50


@dataclass
class FieldEstimate:
    """What the cross-validation found: the chosen ``patch`` and ``heads``, each candidate's
    overall accuracy per fold on held-out fields, and the chosen candidate's mean (the expected
    accuracy on fields that gave no label) with its range over the folds. ``patch`` is None when
    there were too few fields (``note`` says why)."""

    patch: int | None
    heads: str | None
    scores: dict[str, list[float]] = field(default_factory=dict)  # "P=5 both" -> OA per fold
    expected_oa: float | None = None
    low: float | None = None
    high: float | None = None
    folds: int = 0
    held_out_pixels: list[int] = field(default_factory=list)
    scored_classes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the model file and the training report)."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for the log."""
        if self.patch is None:
            return self.note
        source = {"both": "both classifiers", "spectral": "the centre-spectrum classifier"}.get(
            self.heads or "", "the window classifier")
        scored = min(self.held_out_pixels, default=0)
        rough = (f"; rough: a fold scored only {scored} held-out pixels (label more pixels per field, e.g. whole "
                 "polygons, for a firmer figure and choice)") if scored < FEW_HELD_OUT else ""
        return (f"expected overall accuracy on unlabelled fields: {100 * (self.expected_oa or 0):.1f} % "
                f"(range over {self.folds} folds {100 * (self.low or 0):.1f}-{100 * (self.high or 0):.1f} %); "
                f"chose patch {self.patch}, map from {source} ({self.seconds:.0f} s of cross-validation){rough}")


def label_fields(rows: np.ndarray, cols: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Field of each labelled pixel (scene rows, columns, class indices): 8-connected pixels
    of one class share a field. Numbered from 1, class by class, each class's fields in the
    row-major order of their first pixel (as labelling one class raster at a time would).

    The pixels are linked to their labelled neighbours through a sparse graph
    (scipy.sparse.csgraph), so the cost follows the labelled pixels, not their extent."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(rows.size)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    width = int(cols.max()) + 3  # a free column on each side: a neighbour never wraps to another row
    key = (rows.astype(np.int64) - int(rows.min()) + 1) * width + cols.astype(np.int64) + 1
    order = np.argsort(key)
    ordered = key[order]
    links = []
    for step in (1, width - 1, width, width + 1):  # right, and the three below: each pair once
        at = np.minimum(np.searchsorted(ordered, key + step), n - 1)
        hit = np.flatnonzero(ordered[at] == key + step)
        other = order[at[hit]]
        same = index[hit] == index[other]
        links.append((hit[same], other[same]))
    a = np.concatenate([pair[0] for pair in links])
    b = np.concatenate([pair[1] for pair in links])
    _, component = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)), directed=False)
    first = np.full(int(component.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, component, key)
    pixel_class = np.empty(first.size, dtype=np.int64)
    pixel_class[component] = index
    number = np.empty(first.size, dtype=np.int32)
    number[np.lexsort((first, pixel_class))] = np.arange(1, first.size + 1)
    return number[component]


def assign_folds(groups: np.ndarray, index: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each labelled pixel (its ``groups`` field id and ``index`` class): each class's
    fields shuffled and dealt round-robin into ``folds`` folds; -1 for the pixels of a class with
    a single field (always trained on)."""
    rng = np.random.default_rng([seed, 16])
    fold = np.full(groups.shape, -1, dtype=np.int64)
    for k in np.unique(index):
        ids = rng.permutation(np.unique(groups[index == k]))
        if len(ids) < 2:
            continue
        for i, g in enumerate(ids):
            fold[(groups == g) & (index == k)] = i % folds
    return fold


class _Inner(Progress):
    """The progress of a cross-validation model: silent, but cancelled with the outer run."""

    def __init__(self, outer: Progress) -> None:
        self.outer = outer

    def cancelled(self) -> bool:
        return self.outer.cancelled()


def _draw(index: np.ndarray, chosen: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``shots`` positions per class among the ``chosen`` ones."""
    picked = []
    for k in np.unique(index[chosen]):
        members = np.flatnonzero(chosen & (index == k))
        picked.append(rng.choice(members, size=min(shots, members.size), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _far(rows: np.ndarray, cols: np.ndarray, train_rows: np.ndarray, train_cols: np.ndarray, gap: int) -> np.ndarray:
    """Which of the pixels (rows, cols) lie more than ``gap`` pixels (Chebyshev distance) from
    every training pixel."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([train_rows, train_cols]))
    distance, _ = tree.query(np.column_stack([rows, cols]), p=np.inf, distance_upper_bound=gap + 0.5)
    return np.isinf(distance)


def cross_validate(da: xr.DataArray, rows: np.ndarray, cols: np.ndarray, index: np.ndarray, groups: np.ndarray,
                   classes: list[ClassInfo], config: TrainConfig, device: torch.device,
                   progress: Progress | None = None, *, statistics: tuple[np.ndarray, np.ndarray] | None = None,
                   patches: tuple[int, ...] = PATCHES) -> FieldEstimate:
    """Leave-fields-out cross-validation of every (patch, heads) candidate on the labelled
    pixels (scene ``rows``, ``cols``, class ``index``, field ``groups``), with short runs of
    ``config`` (labelled windows only, ``STEP_SHARE`` of the steps). Returns the candidate with
    the best mean OA over the folds (the first of equals, in the order of ``patches`` from the
    largest, then in the order of HEADS) and its estimate."""
    from .training import train_model  # train uses this module

    progress = progress or Progress()
    start = time.perf_counter()
    fold = assign_folds(groups, index, FOLDS, config.seed)
    scorable = [classes[k].name for k in np.unique(index[fold >= 0])]
    if len(scorable) < 2:
        return FieldEstimate(None, None, note=(
            f"too few fields to cross-validate ({len(scorable)} class(es) with two or more separate fields; at least 2 "
            f"needed): kept patch {config.model.patch}, and no estimate of the accuracy on unlabelled fields"))
    rng = np.random.default_rng([config.seed, 17])
    plans = []
    for f in range(FOLDS):
        train = _draw(index, fold != f, config.shots, rng)
        held = np.flatnonzero(fold == f)
        held = held[_far(rows[held], cols[held], rows[train], cols[train], GAP)]
        if held.size > HELD_OUT_PIXELS:
            held = np.sort(rng.choice(held, HELD_OUT_PIXELS, replace=False))
        if held.size and np.unique(index[train]).size >= 2:
            plans.append((train, held))
    if not plans:
        return FieldEstimate(None, None, note=(
            f"no held-out field lies more than {GAP} pixels from the other fields' training pixels: kept patch "
            f"{config.model.patch}, and no estimate of the accuracy on unlabelled fields"))
    order = sorted(patches, reverse=True)
    heads_tried = HEADS if config.model.auxiliary else ("window",)
    scores: dict[str, list[float]] = {f"P={p} {h}": [] for p in order for h in heads_tried}
    progress.stage("cross-validation", len(order) * len(plans))
    for train, held in plans:
        samples = Samples(rows[train], cols[train], index[train])
        for p in order:
            short = dataclasses.replace(config, unlabelled=0,
                                        epochs=max(1, round(STEP_SHARE * config.epochs_for(train.size))),
                                        model=dataclasses.replace(config.model, patch=p, heads="window"))
            model, _ = train_model(da, samples, classes, short, device, _Inner(progress), statistics=statistics)
            for h, value in _scores(model, da, rows[held], cols[held], index[held], heads_tried, device).items():
                scores[f"P={p} {h}"].append(value)
            progress.advance(1, f"patch {p}")
    best = max(scores, key=lambda name: float(np.mean(scores[name])))  # max keeps the first of equals
    patch, heads = int(best.split()[0][2:]), best.split()[1]
    oa = scores[best]
    return FieldEstimate(patch, heads, scores, float(np.mean(oa)), float(min(oa)), float(max(oa)), len(plans),
                         [int(h.size) for _, h in plans], scorable, time.perf_counter() - start)


def _scores(model: Any, da: xr.DataArray, rows: np.ndarray, cols: np.ndarray, index: np.ndarray,
            heads: tuple[str, ...], device: torch.device) -> dict[str, float]:
    """Overall accuracy of the model's map at the pixels for each of ``heads`` (by
    :class:`~cssd_geo.training.Validation`: one dense pass over a compact area)."""
    from .training import Validation

    order = np.argsort(rows, kind="stable")
    validate = Validation(da, (rows[order], cols[order], index[order]), model.reach, device)
    out = {}
    for h in heads:
        model.config = dataclasses.replace(model.config, heads=h)
        out[h] = validate(model)
    return out
