"""Vector labels: read, reproject to the scene, choose the class field, rasterize."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..classes import ClassInfo, make_class_table
from ..errors import CssdError, first_line
from .scene import Grid

if TYPE_CHECKING:
    import geopandas as gpd
    from rasterio.crs import CRS

MAX_CLASSES = 1000


@dataclass
class Labels:
    """Label features in the scene CRS, each with the logit index of its class."""

    path: str
    frame: gpd.GeoDataFrame  # with a ``_class_index`` column
    classes: list[ClassInfo]
    class_field: str
    notes: list[str] = field(default_factory=list)  # what was repaired or left out, for the user


@dataclass
class LabelPixels:
    """The labelled pixels of the scene grid, in row-major order: scene rows and columns and
    class indices (logit order of ``classes``). Only labelled pixels are stored, so memory
    follows the labelled area, not the extent of the labels."""

    rows: np.ndarray
    cols: np.ndarray
    index: np.ndarray
    classes: list[ClassInfo]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rows.size)

    def subset(self, keep: np.ndarray) -> LabelPixels:
        """The pixels where ``keep`` (a boolean per pixel) is True."""
        return LabelPixels(self.rows[keep], self.cols[keep], self.index[keep], self.classes, self.notes)


LABEL_BLOCK = 2048  # labels are burnt one block of this side at a time: 16 MB of int32 at most


def read_vector(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """Read a vector layer (shapefile, GeoPackage, GeoJSON, ...) with geopandas/pyogrio."""
    import geopandas as gpd

    path = os.fspath(path)
    if not os.path.exists(path):
        raise CssdError(f"{path}: labels file not found; check the path")
    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises DataSourceError and others for unreadable files
        raise CssdError(f"{path}: not a vector layer GDAL can read ({first_line(exc)}); "
                        "give a shapefile, GeoPackage or GeoJSON") from exc
    if frame.crs is None:
        raise CssdError(f"{path}: the layer has no CRS; add one (e.g. a .prj file, or "
                        "ogr2ogr -a_srs EPSG:XXXX) so labels can be placed on the scene")
    return frame


def read_labels(path: str | os.PathLike, crs: CRS | None, class_field: str | None = None,
                classes: list[ClassInfo] | None = None) -> Labels:
    """Read labels, reproject them to ``crs`` and give each feature its class index.

    With ``class_field`` None the one plausible class field is used, else the error lists
    the fields. ``classes``, when given (evaluation against a map), fixes the class table:
    features are matched to it by id (integer field) or name (text field).
    """
    path = os.fspath(path)
    frame, notes = _usable_geometries(path, read_vector(path))
    name = class_field if class_field is not None else _guess_class_field(path, frame)
    if name not in frame.columns or name == frame.geometry.name:
        raise CssdError(f"{path}: no field {name!r}; choose --class-field from: {_field_list(frame)}")
    unlabelled = int(frame[name].isna().sum())
    if unlabelled:
        notes.append(f"{path}: {unlabelled} features have no value in {name!r} and were left out")
        frame = frame[frame[name].notna()]
    field = name
    ids, names = _class_values(path, frame, field)
    if classes is None:
        table = make_class_table(*zip(*sorted(set(zip(ids, names, strict=True))), strict=True))
        by_id = {c.id: k for k, c in enumerate(table)}
        index = np.array([by_id[i] for i in ids], dtype=np.int64)
    else:
        table = list(classes)
        text = pd.api.types.is_string_dtype(frame[field]) or frame[field].dtype == object
        key: dict[str | int, int] = {(c.name if text else c.id): k for k, c in enumerate(table)}
        values: Sequence[str | int] = names if text else ids
        index = np.array([key.get(v, -1) for v in values], dtype=np.int64)
    frame = frame.assign(_class_index=index)
    if crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    return Labels(path, frame, table, field, notes)


def _usable_geometries(path: str, frame: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Drop features without a geometry and repair invalid ones (``make_valid``), saying so."""
    notes = []
    missing = frame.geometry.isna() | frame.geometry.is_empty
    if missing.any():
        notes.append(f"{path}: {int(missing.sum())} features have an empty or no geometry and were skipped")
        frame = frame[~missing]
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        frame = frame.copy()
        frame.loc[invalid, frame.geometry.name] = frame.geometry[invalid].make_valid()
        notes.append(f"{path}: {int(invalid.sum())} invalid geometries (e.g. self-intersecting) were repaired")
        frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if len(frame) == 0:
        raise CssdError(f"{path}: the layer has no features with a geometry; add labelled polygons or points")
    return frame, notes


def _field_list(frame: gpd.GeoDataFrame) -> str:
    cols = [c for c in frame.columns if c != frame.geometry.name]
    return ", ".join(f"{c} ({frame[c].dtype})" for c in cols) or "(the layer has no attribute fields)"


def _integer_like(series: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_integer_dtype(series):
        return True
    if pd.api.types.is_float_dtype(series):
        values = series.dropna().to_numpy()
        return values.size > 0 and bool(np.all(values == np.round(values)))
    return False


def _text_like(series: pd.Series) -> bool:
    values = series.dropna()
    return len(values) > 0 and bool(values.map(lambda v: isinstance(v, str)).all())


def _guess_class_field(path: str, frame: gpd.GeoDataFrame) -> str:
    """The one plausible class field: integer or text with 2..MAX_CLASSES values, not a
    per-feature identifier. An integer field and a text field that match one to one (id and
    name of the same classes) count as one, and the integer field is used."""
    candidates = []
    for col in frame.columns:
        if col == frame.geometry.name:
            continue
        s = frame[col].dropna()
        n = s.nunique()
        if not (_integer_like(s) or _text_like(s)) or not 2 <= n <= MAX_CLASSES:
            continue
        if len(frame) > 20 and n == len(frame):  # an identifier, not a class
            continue
        candidates.append(col)
    groups: list[list[str]] = []
    for col in candidates:
        for group in groups:
            if _one_to_one(frame, col, group[0]):
                group.append(col)
                break
        else:
            groups.append([col])
    if len(groups) != 1:
        what = "no field looks like a class field" if not groups else \
            "several fields could be the class field (" + ", ".join("/".join(g) for g in groups) + ")"
        raise CssdError(f"{path}: {what}; choose one with --class-field from: {_field_list(frame)}")
    group = groups[0]
    ints = [c for c in group if _integer_like(frame[c])]
    return ints[0] if ints else group[0]


def _one_to_one(frame: gpd.GeoDataFrame, a: str, b: str) -> bool:
    pairs = frame[[a, b]].dropna().drop_duplicates()
    return len(pairs) == pairs[a].nunique() == pairs[b].nunique()


def _class_values(path: str, frame: gpd.GeoDataFrame, field: str) -> tuple[list[int], list[str]]:
    """Class id and name of every feature, from an integer or a text field."""
    series = frame[field]
    if len(series) == 0:
        raise CssdError(f"{path}: field {field!r} is empty in every feature; fill in the classes")
    if _integer_like(series):
        ids = [int(v) for v in series]
        partner = _name_partner(frame, field)
        names = [str(v) for v in frame[partner]] if partner else [f"class {i}" for i in ids]
        return ids, names
    if _text_like(series):
        values = [str(v) for v in series]
        numeric = [v for v in values if _is_number(v)]
        if numeric and len(numeric) < len(values):
            word = next(v for v in values if not _is_number(v))
            raise CssdError(f"{path}: field {field!r} mixes numbers and text (e.g. {numeric[0]!r} and {word!r}); "
                            "a class field must be all integers or all text (fix the values or pick another field)")
        order = {name: k + 1 for k, name in enumerate(sorted(set(values)))}
        return [order[v] for v in values], values
    kinds = sorted({type(v).__name__ for v in series})
    raise CssdError(f"{path}: field {field!r} holds {', '.join(kinds)} values; a class field must be all "
                    "integers or all text (fix the values or pick another field)")


def _name_partner(frame: gpd.GeoDataFrame, field: str) -> str | None:
    """A text field that names the classes of integer ``field`` one to one, if there is one."""
    for col in frame.columns:
        if col not in (field, frame.geometry.name) and _text_like(frame[col]) and _one_to_one(frame, field, col):
            return col
    return None


def rasterize_labels(labels: Labels, grid: Grid, block: int = LABEL_BLOCK) -> LabelPixels:
    """Burn the labels onto the scene grid and keep the labelled pixels.

    Polygons take the pixels whose centres they contain, points the pixel they fall in; where
    features overlap, the later one wins. The grid is burnt one ``block`` x ``block`` window at
    a time, and only windows that a feature's envelope touches (found with the layer's spatial
    index), so fields scattered over a continent cost their own area, not their bounding box.
    Raises :class:`CssdError` when no label touches the scene.
    """
    from rasterio import features, windows
    from shapely.geometry import box

    frame = labels.frame[labels.frame["_class_index"] >= 0]
    if len(frame) == 0:
        raise CssdError(f"{labels.path}: no feature has a class of the model/map; check --class-field")
    outside = ~frame.intersects(box(*windows.bounds(windows.Window(0, 0, grid.width, grid.height), grid.transform)))
    notes = []
    if 0 < outside.sum() < len(frame):
        notes.append(f"{labels.path}: {int(outside.sum())} of {len(frame)} features lie outside the scene "
                     "and were left out")
        frame = frame[~outside]
    left, bottom, right, top = frame.total_bounds
    if not np.all(np.isfinite(frame.total_bounds)):
        raise CssdError(f"{labels.path}: the labels have no valid coordinates in the scene CRS ({grid.crs}); "
                        "check that the layer's CRS is the one its coordinates are in")
    full = windows.Window(0, 0, grid.width, grid.height)
    try:
        win = windows.from_bounds(left, bottom, right, top, transform=grid.transform)
        win = win.round_offsets(op="floor").round_lengths(op="ceil")
        win = windows.Window(win.col_off - 1, win.row_off - 1, win.width + 2, win.height + 2)
        win = win.intersection(full)
    except Exception:  # rasterio.errors.WindowError: no overlap
        win = None
    if win is None or win.width <= 0 or win.height <= 0:
        raise CssdError(f"{labels.path}: no label falls inside the scene (labels {_bounds(frame.total_bounds)}, "
                        f"scene CRS {grid.crs}); use labels that overlap the scene")
    geometries, index = frame.geometry.to_numpy(), frame["_class_index"].to_numpy(dtype=np.int64)
    tree = frame.sindex
    rows, cols, found = [], [], []
    r0, c0, r1, c1 = int(win.row_off), int(win.col_off), int(win.row_off + win.height), int(win.col_off + win.width)
    for top_row in range(r0, r1, block):
        for left_col in range(c0, c1, block):
            part = windows.Window(left_col, top_row, min(block, c1 - left_col), min(block, r1 - top_row))
            touching = np.sort(tree.query(box(*windows.bounds(part, grid.transform))))  # in layer order
            if touching.size == 0:
                continue
            burnt = features.rasterize(((geometries[i], int(index[i])) for i in touching),
                                       out_shape=(int(part.height), int(part.width)),
                                       transform=windows.transform(part, grid.transform), fill=-1, dtype="int32")
            r, c = np.nonzero(burnt >= 0)
            rows.append(r + top_row)
            cols.append(c + left_col)
            found.append(burnt[r, c].astype(np.int64))
    if not rows or not sum(r.size for r in rows):
        raise CssdError(f"{labels.path}: the labels cover no pixel centre of the scene; "
                        "use larger polygons, points, or a finer scene")
    all_rows, all_cols = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
    order = np.lexsort((all_cols, all_rows))  # row-major, as one raster's np.nonzero gives them
    return LabelPixels(all_rows[order], all_cols[order], np.concatenate(found)[order], labels.classes, notes)


def _bounds(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in values) + ")"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


POINT_FORMATS = (".gpkg", ".geojson")  # single-file vector formats, published whole like every output


def check_point_output(path: str) -> None:
    """Refuse a point layer name that is not GeoPackage or GeoJSON."""
    if os.path.splitext(path)[1].lower() not in POINT_FORMATS:
        raise CssdError(f"{path}: points are written as GeoPackage or GeoJSON; give a name ending in "
                        f"{' or '.join(POINT_FORMATS)}")


def write_points(frame: gpd.GeoDataFrame, path: str) -> None:
    """Write a point layer to ``path`` (checked by :func:`check_point_output`) under a
    temporary name, published when complete; the layer is named after the file."""
    import re

    from ..errors import writing
    from ..outputs import output_file

    with output_file(path) as tmp, writing(path):
        os.unlink(tmp)  # GDAL creates the file itself
        layer = re.sub(r"\W+", "_", os.path.splitext(os.path.basename(path))[0]).strip("_") or "points"
        frame.to_file(tmp, engine="pyogrio", layer=layer)
