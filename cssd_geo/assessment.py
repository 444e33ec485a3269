"""Area and accuracy of a class map from a stratified random reference sample.

The good-practice design for land-cover maps (Olofsson et al. 2014, Remote Sensing of
Environment 148: 42-57): the strata are the map's classes; :func:`draw_sample` places a
stratified random sample of points on the map, an analyst labels each point's true class, and
:func:`estimate_area` turns the labelled sample into error-adjusted areas, user's, producer's
and overall accuracy, each with a 95 % confidence interval. Counting mapped pixels ("pixel
counting") is biased by the map's errors; these estimators are not.

Both steps read the map block by block (rasterio's block windows), so memory stays bounded on
a map of any size.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import rasterio.transform
from rasterio.windows import Window

from .classes import ClassInfo
from .config import AreaConfig, SampleConfig
from .errors import CssdError, writing
from .io.scene import Grid
from .io.vector import check_point_output, read_labels, write_points
from .io.writers import read_class_table
from .outputs import OutputSet, check_output, output_file, write_json
from .progress import Progress

Z95 = 1.959964  # the standard normal quantile of a two-sided 95 % interval
REFERENCE_FIELD = "reference"  # the field of a drawn sample that the analyst fills with the true class id


@dataclass
class ClassMap:
    """A class map opened for assessment: its grid, nodata value, class table and the number
    of pixels of each class (in the order of ``classes``)."""

    path: str
    grid: Grid
    nodata: float | None
    classes: list[ClassInfo]
    pixels: np.ndarray
    blocks: list[tuple[Window, np.ndarray]] = field(default_factory=list)  # pixels per class of each block

    @property
    def pixel_area_m2(self) -> float | None:
        """The area of one pixel in square metres, or None in a geographic CRS."""
        crs = self.grid.crs
        if crs is None or not crs.is_projected:
            return None
        factor = crs.linear_units_factor[1]
        return abs(self.grid.transform.a * self.grid.transform.e) * factor ** 2


def open_class_map(path: str | os.PathLike, progress: Progress | None = None) -> ClassMap:
    """Open a map written by ``cssd-geo predict`` and count its pixels per class."""
    progress = progress or Progress()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CssdError(f"{path}: map file not found; check the path")
    classes = read_class_table(path)
    if not classes:
        raise CssdError(f"{path}: has no class table (no cssd-geo tags or colour table); give a map "
                        "written by 'cssd-geo predict'")
    position = {c.id: k for k, c in enumerate(classes)}
    try:
        with rasterio.open(path) as ds:
            grid = Grid(ds.crs, ds.transform, ds.height, ds.width)
            nodata = ds.nodata
            windows = [window for _, window in ds.block_windows(1)]
            progress.stage("counting mapped pixels", len(windows))
            blocks = []
            for window in windows:
                counts = np.zeros(len(classes), dtype=np.int64)
                values, n = np.unique(ds.read(1, window=window), return_counts=True)
                for value, k in zip(values.tolist(), n.tolist(), strict=True):
                    if value in position and value != nodata:
                        counts[position[value]] += k
                blocks.append((window, counts))
                progress.advance(1)
                progress.check("counting")
    except rasterio.errors.RasterioIOError as exc:
        raise CssdError(f"{path}: not a raster GDAL can read; give a map written by 'cssd-geo predict'") from exc
    pixels = np.stack([counts for _, counts in blocks]).sum(axis=0)
    if pixels.sum() == 0:
        raise CssdError(f"{path}: the map has no pixel of a class in its class table; give a map written by "
                        "'cssd-geo predict'")
    return ClassMap(path, grid, nodata, classes, pixels, blocks)


# --- the sample -------------------------------------------------------------------------------

@dataclass
class Sample:
    """A drawn reference sample: the points per class (in the order of the map's classes) and
    where they were written."""

    path: str
    classes: list[ClassInfo]
    points: np.ndarray

    def table(self) -> str:
        """One line per class: its points."""
        lines = [f"{int(self.points.sum())} points written to {self.path}",
                 f"{'id':>5}  {'class':<30} {'points':>7}"]
        lines += [f"{c.id:>5}  {c.name[:30]:<30} {int(n):>7}" for c, n in zip(self.classes, self.points, strict=True)]
        lines.append(f"fill the {REFERENCE_FIELD!r} field of each point with its true class id, then run "
                     f"'cssd-geo area MAP --labels {os.path.basename(self.path)}'")
        return "\n".join(lines)


def allocate(pixels: np.ndarray, points: int, min_per_class: int) -> np.ndarray:
    """Sample size per class from the mapped pixels per class: in proportion to the mapped
    area, except that a class whose share falls below ``min_per_class`` gets that many (all
    its pixels when it has fewer; less when ``points`` cannot give that many to every class)
    and the others share the rest, in proportion again (largest remainders). The total is
    ``points``, or every mapped pixel when there are fewer."""
    pixels = np.asarray(pixels, dtype=np.int64)
    mapped = pixels > 0
    floor = np.minimum(pixels, min(min_per_class, points // max(1, int(mapped.sum()))))
    total = min(points, int(pixels.sum()))
    n = np.zeros_like(pixels)
    fixed = ~mapped
    while True:
        free = total - int(n[fixed].sum())
        weights = np.where(fixed, 0, pixels).astype(np.float64)
        share = free * weights / weights.sum() if weights.sum() else weights
        low = ~fixed & ((share < floor) | (share > pixels))  # raised to the minimum, or capped at every pixel
        if not low.any():
            break
        n[low] = np.where(share[low] < floor[low], floor[low], pixels[low])
        fixed |= low
    n[~fixed] = np.floor(share[~fixed]).astype(np.int64)
    for k in np.argsort(-(share - np.floor(share)), kind="stable")[: total - int(n.sum())]:
        n[k] += 1
    return n


def draw_sample(map_path: str | os.PathLike, output: str | os.PathLike, config: SampleConfig | None = None,
                progress: Progress | None = None) -> Sample:
    """Draw a stratified random sample of pixels from a class map (strata: its classes; sizes:
    :func:`allocate`) and write it as points at the pixel centres, with the mapped class and an
    empty ``reference`` field for the analyst to fill."""
    import geopandas as gpd
    import pandas as pd

    config = config or SampleConfig()
    config.validate()
    progress = progress or Progress()
    output = check_output(output, config.overwrite, inputs=(map_path,))
    check_point_output(output)
    class_map = open_class_map(map_path, progress)
    sizes = allocate(class_map.pixels, config.points, config.min_per_class)
    rng = np.random.default_rng(config.seed)
    ranks = [np.sort(rng.choice(int(total), int(size), replace=False)) if size else np.zeros(0, np.int64)
             for total, size in zip(class_map.pixels, sizes, strict=True)]
    seen = np.zeros(len(class_map.classes), dtype=np.int64)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    which: list[np.ndarray] = []
    progress.stage("drawing the sample", len(class_map.blocks))
    with rasterio.open(class_map.path) as ds:
        for window, counts in class_map.blocks:
            block = None
            for k in np.flatnonzero(counts):
                lo, hi = np.searchsorted(ranks[k], [seen[k], seen[k] + counts[k]])
                if hi > lo:
                    block = ds.read(1, window=window) if block is None else block
                    r, c = np.nonzero(block == class_map.classes[k].id)  # C order: the order ranks count in
                    chosen = ranks[k][lo:hi] - seen[k]
                    rows.append(r[chosen] + int(window.row_off))
                    cols.append(c[chosen] + int(window.col_off))
                    which.append(np.full(chosen.size, k))
                seen[k] += counts[k]
            progress.advance(1)
            progress.check("sampling")
    row, col, klass = (np.concatenate(a) for a in (rows, cols, which))
    order = np.lexsort((col, row, klass))
    row, col, klass = row[order], col[order], klass[order]
    xs, ys = rasterio.transform.xy(class_map.grid.transform, row, col, offset="center")
    frame = gpd.GeoDataFrame(
        {"point_id": np.arange(1, row.size + 1), "map_id": [class_map.classes[i].id for i in klass],
         "map_class": [class_map.classes[i].name for i in klass],
         REFERENCE_FIELD: pd.array([None] * row.size, dtype="Int32")},
        geometry=gpd.points_from_xy(np.asarray(xs), np.asarray(ys)), crs=class_map.grid.crs)
    write_points(frame, output)
    return Sample(output, class_map.classes, sizes)


# --- the estimates ----------------------------------------------------------------------------

@dataclass
class Estimates:
    """The stratified estimators of a sample's error matrix (arrays over the classes; NaN
    where an estimate does not exist, e.g. the interval of a stratum with one point).

    ``area_share``: the estimated share of the mapped area that truly is each class, with
    its 95 % half-interval; ``users``/``producers``: the user's (per map class) and producer's
    (per reference class) accuracy, with 95 % half-intervals; ``overall`` likewise."""

    area_share: np.ndarray
    area_share_ci: np.ndarray
    users: np.ndarray
    users_ci: np.ndarray
    producers: np.ndarray
    producers_ci: np.ndarray
    overall: float
    overall_ci: float


def stratified_estimates(counts: np.ndarray, mapped: np.ndarray) -> Estimates:
    """Estimates from the sample's error matrix ``counts`` [K, K] (rows: map class = stratum,
    columns: reference class) and the mapped pixels of each class ``mapped`` [K] (Olofsson et
    al. 2014, equations 2-10: proportions p_ij = W_i n_ij / n_i.; the variances of the
    stratified estimator). Strata without mapped pixels weigh nothing."""
    n = np.asarray(counts, dtype=np.float64)
    mapped = np.asarray(mapped, dtype=np.float64)
    w = mapped / mapped.sum()
    n_i = n.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i.
        denominator = np.where(n_i > 1, n_i - 1, np.nan)[:, None]  # n_i. - 1 (no variance from one point)
        weighted = w[:, None] ** 2 * share * (1 - share) / denominator
        weighted = np.where(w[:, None] > 0, weighted, 0.0)
        p = w[:, None] * share
        area_share = p.sum(axis=0)
        area_ci = Z95 * np.sqrt(weighted.sum(axis=0))
        users = np.where(n_i > 0, np.diag(share), np.nan)
        users_var = users * (1 - users) / denominator[:, 0]
        overall = float(np.trace(p))
        overall_ci = Z95 * math.sqrt(float(np.nansum(w ** 2 * users_var)))
        producers = np.diag(p) / area_share
        # the estimated pixels of each reference class, and the producer's accuracy variance (eq. 7)
        n_j = (mapped[:, None] * share).sum(axis=0)
        producers_var = np.zeros(len(mapped))
        for j in range(len(mapped)):
            own = mapped[j] ** 2 * (1 - producers[j]) ** 2 * users_var[j] if mapped[j] > 0 else 0.0
            others = sum(mapped[i] ** 2 * share[i, j] * (1 - share[i, j]) / denominator[i, 0]
                         for i in range(len(mapped)) if i != j and mapped[i] > 0)
            producers_var[j] = (own + producers[j] ** 2 * others) / n_j[j] ** 2
    return Estimates(area_share, area_ci, users, Z95 * np.sqrt(users_var), producers,
                     Z95 * np.sqrt(producers_var), overall, overall_ci)


@dataclass
class AreaEstimate:
    """Error-adjusted areas and accuracies of a class map from a reference sample."""

    map_path: str
    classes: list[ClassInfo]
    mapped_pixels: np.ndarray
    sample: np.ndarray  # error matrix [K, K]: rows map class, columns reference class
    estimates: Estimates
    pixel_area_m2: float | None
    notes: list[str] = field(default_factory=list)

    def per_class(self) -> list[dict[str, Any]]:
        """One record per class (the CSV rows, the JSON's ``per_class``): areas in pixels and,
        in a projected CRS, hectares; accuracies as fractions; ``*_ci95`` the half-width of the
        95 % interval; None where there is no estimate."""
        e, total = self.estimates, float(self.mapped_pixels.sum())
        ha = None if self.pixel_area_m2 is None else self.pixel_area_m2 / 1e4
        records = []
        for k, c in enumerate(self.classes):
            record: dict[str, Any] = {
                "id": c.id, "name": c.name, "mapped_pixels": int(self.mapped_pixels[k]),
                "sample_points": int(self.sample[k].sum()), "reference_points": int(self.sample[:, k].sum()),
                "estimated_pixels": _number(e.area_share[k] * total),
                "estimated_pixels_ci95": _number(e.area_share_ci[k] * total),
                "users_accuracy": _number(e.users[k]), "users_accuracy_ci95": _number(e.users_ci[k]),
                "producers_accuracy": _number(e.producers[k]),
                "producers_accuracy_ci95": _number(e.producers_ci[k])}
            if ha is not None:
                record.update({"mapped_ha": self.mapped_pixels[k] * ha,
                               "estimated_ha": _number(e.area_share[k] * total * ha),
                               "estimated_ha_ci95": _number(e.area_share_ci[k] * total * ha)})
            records.append(record)
        return records

    def to_json(self) -> dict[str, Any]:
        """The JSON document written by ``--json``."""
        return {"map": self.map_path, "overall_accuracy": self.estimates.overall,
                "overall_accuracy_ci95": _number(self.estimates.overall_ci), "pixel_area_m2": self.pixel_area_m2,
                "sample_points": int(self.sample.sum()), "per_class": self.per_class(),
                "error_matrix": self.sample.astype(int).tolist(), "class_ids": [c.id for c in self.classes],
                "estimator": "stratified (strata: map classes), Olofsson et al. 2014", "notes": self.notes}

    def table(self) -> str:
        """A plain-text report: overall accuracy, then areas and accuracies per class."""
        unit = "ha" if self.pixel_area_m2 is not None else "pixels"
        area = "estimated_ha" if unit == "ha" else "estimated_pixels"
        mapped = "mapped_ha" if unit == "ha" else "mapped_pixels"
        lines = [f"sample points      {int(self.sample.sum())}",
                 f"overall accuracy   {_pct(self.estimates.overall, self.estimates.overall_ci)}", "",
                 f"{'id':>5}  {'class':<24} {'mapped ' + unit:>14} {'estimated ' + unit + ' (95 % CI)':>30} "
                 f"{'user acc.':>16} {'producer acc.':>16} {'points':>6}"]
        for r in self.per_class():
            estimate = "-" if r[area] is None else f"{r[area]:.1f} ± {r[area + '_ci95'] or 0:.1f}"
            lines.append(f"{r['id']:>5}  {r['name'][:24]:<24} {r[mapped]:>14.1f} {estimate:>30} "
                         f"{_pct(r['users_accuracy'], r['users_accuracy_ci95']):>16} "
                         f"{_pct(r['producers_accuracy'], r['producers_accuracy_ci95']):>16} {r['sample_points']:>6}")
        return "\n".join(lines + self.notes)

    def write_csv(self, path: str) -> None:
        """The per-class records as a CSV table."""
        records = self.per_class()
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)


def _number(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _pct(value: float | None, ci: float | None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f} ± {100 * ci:.1f} %" if ci is not None else f"{100 * value:.1f} %"


def estimate_area(map_path: str | os.PathLike, reference: str | os.PathLike, config: AreaConfig | None = None,
                  progress: Progress | None = None) -> AreaEstimate:
    """Error-adjusted area and accuracy of a class map from reference points (a stratified
    random sample of the map, e.g. from :func:`draw_sample`, whose ``class_field`` holds each
    point's true class id or name)."""
    config = config or AreaConfig()
    progress = progress or Progress()
    map_path = os.fspath(map_path)
    for path in (config.json_path, config.csv_path):
        if path:  # replaced when it exists, as a report is
            check_output(path, overwrite=True, inputs=(map_path, reference))
    class_map = open_class_map(map_path, progress)
    labels = read_labels(reference, class_map.grid.crs, config.class_field, classes=class_map.classes)
    notes = list(labels.notes)
    frame = labels.frame
    if not (frame.geometry.geom_type == "Point").all():
        kinds = ", ".join(sorted(set(frame.geometry.geom_type)))
        raise CssdError(f"{labels.path}: the area estimate needs reference points (a stratified sample of the map, "
                        f"e.g. from 'cssd-geo sample'), not {kinds}; compare polygons with 'cssd-geo evaluate'")
    unknown = int((frame["_class_index"] < 0).sum())
    if unknown:
        notes.append(f"{unknown} points have reference classes the map does not know; they were left out")
    frame = frame[frame["_class_index"] >= 0]
    xs, ys = frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
    rows, cols = (np.asarray(a, dtype=np.int64) for a in rasterio.transform.rowcol(class_map.grid.transform, xs, ys))
    inside = (rows >= 0) & (rows < class_map.grid.height) & (cols >= 0) & (cols < class_map.grid.width)
    if not inside.all():
        notes.append(f"{int((~inside).sum())} points lie outside the map; they were left out")
    reference_index = frame["_class_index"].to_numpy()[inside]
    with rasterio.open(map_path) as ds:  # the map's class at each point (GDAL reads the few blocks they touch)
        mapped_ids = np.array([v[0] for v in ds.sample(zip(xs[inside], ys[inside], strict=True), indexes=1)],
                              dtype=np.int64)
    position = {c.id: k for k, c in enumerate(class_map.classes)}
    map_index = np.array([position.get(int(v), -1) for v in mapped_ids], dtype=np.int64)
    off = map_index < 0
    if off.any():
        notes.append(f"{int(off.sum())} points fall on map pixels without a class (nodata); they were left out")
    counts = np.zeros((len(class_map.classes),) * 2, dtype=np.int64)
    np.add.at(counts, (map_index[~off], reference_index[~off]), 1)
    unsampled = [c.name for k, c in enumerate(class_map.classes) if class_map.pixels[k] > 0 and counts[k].sum() == 0]
    if unsampled:
        raise CssdError(f"{labels.path}: no reference point falls on the mapped class(es) {', '.join(unsampled)}; "
                        "every mapped class needs points (draw a stratified sample with 'cssd-geo sample')")
    result = AreaEstimate(map_path, class_map.classes, class_map.pixels, counts,
                          stratified_estimates(counts, class_map.pixels), class_map.pixel_area_m2, notes)
    with OutputSet() as outputs:
        if config.json_path:
            write_json(config.json_path, result.to_json(), outputs)
        if config.csv_path:
            with writing(config.csv_path), output_file(config.csv_path, outputs) as tmp:
                result.write_csv(tmp)
    return result
