"""Class maps to GeoTIFF: tiled, compressed, colour table, class names, QGIS style; written
to a temporary name and renamed only when complete."""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..classes import ClassInfo, classes_from_json, classes_to_json
from ..errors import CssdError
from .scene import Grid

CLASSES_TAG = "CSSD_CLASSES"
BLOCK = 256


def map_encoding(classes: Sequence[ClassInfo]) -> tuple[str, int]:
    """The smallest unsigned dtype that holds every class id plus a nodata value, and that
    value (0 unless a class uses 0, then one past the largest id)."""
    ids = [c.id for c in classes]
    if min(ids) < 0:
        raise CssdError(f"class ids must be >= 0 to be stored in a map, got {min(ids)}; renumber the classes")
    nodata = 0 if 0 not in ids else max(ids) + 1
    top = max(max(ids), nodata)
    if top <= 255:
        return "uint8", nodata
    if top <= 65535:
        return "uint16", nodata
    raise CssdError(f"class id {top} is too large for a map (max 65535); renumber the classes")


def qgis_style(classes: Sequence[ClassInfo]) -> str:
    """A QGIS layer style (.qml) showing the map as a paletted raster with class names."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.id}" color="#{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}" '
        f'alpha="255" label={quoteattr(c.name)}/>' for c in classes)
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.22" styleCategories="AllStyleCategories">\n'
            "  <pipe>\n"
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
            "      <rasterTransparency/>\n"
            "      <colorPalette>\n"
            f"{entries}\n"
            "      </colorPalette>\n"
            "    </rasterrenderer>\n"
            "  </pipe>\n"
            "</qgis>\n")


class ClassMapWriter:
    """Writes a single-band class map block by block.

    Use as a context manager: blocks go to a hidden temporary file beside ``path``; on a
    clean exit it is renamed to ``path`` (with ``<name>.qml``, the QGIS style), on an error
    or interruption it is deleted, so ``path`` never holds a partial map.
    """

    def __init__(self, path: str, grid: Grid, classes: Sequence[ClassInfo], tags: dict | None = None) -> None:
        self.path = path
        self.grid = grid
        self.classes = list(classes)
        self.dtype, self.nodata = map_encoding(self.classes)
        self.tags = tags or {}
        self._tmp: str | None = None
        self._ds = None

    def __enter__(self) -> "ClassMapWriter":
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.partial-", suffix=".tif", dir=folder)
        os.close(fd)
        profile = dict(driver="GTiff", width=self.grid.width, height=self.grid.height, count=1,
                       dtype=self.dtype, nodata=self.nodata, crs=self.grid.crs, transform=self.grid.transform,
                       tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                       compress="deflate", BIGTIFF="IF_SAFER")
        self._ds = rasterio.open(self._tmp, "w", **profile)
        colors = {c.id: (*c.color, 255) for c in self.classes}
        colors[self.nodata] = (0, 0, 0, 0)
        self._ds.write_colormap(1, colors)  # before any pixel: GDAL fixes the photometry then
        self._ds.set_band_description(1, "class id")
        self._ds.update_tags(**{CLASSES_TAG: classes_to_json(self.classes)}, **self.tags)
        self._ds.update_tags(1, **{f"CLASS_{c.id}": c.name for c in self.classes})
        return self

    def write(self, row: int, col: int, ids: np.ndarray) -> None:
        """Write a block of class ids (nodata already set) at ``row``, ``col``."""
        self._ds.write(ids.astype(self.dtype, copy=False), 1, window=Window(col, row, ids.shape[1], ids.shape[0]))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._ds is not None and not self._ds.closed:
                self._ds.close()
            if self._tmp and os.path.exists(self._tmp):
                os.unlink(self._tmp)

    def _finish(self) -> None:
        self._ds.close()
        style = os.path.splitext(self.path)[0] + ".qml"
        with open(style, "w", encoding="utf-8") as f:
            f.write(qgis_style(self.classes))
        os.replace(self._tmp, self.path)
        self._tmp = None


def read_class_table(path: str) -> list[ClassInfo]:
    """The class table stored in a map written by cssd-geo (or derived from its colour table)."""
    with rasterio.open(path) as ds:
        text = ds.tags().get(CLASSES_TAG)
        if text:
            return classes_from_json(text)
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = {}
        nodata = ds.nodata
    ids = [i for i, rgba in cmap.items() if rgba[3] > 0 and i != nodata]
    return [ClassInfo(i, f"class {i}", tuple(cmap[i][:3])) for i in sorted(ids)]


def write_quicklook(map_path: str, png_path: str) -> None:
    """A paletted PNG of a class map (nodata transparent), e.g. for a report."""
    with rasterio.open(map_path) as src:
        data = src.read(1)
        cmap = src.colormap(1)
    if data.dtype != np.uint8:
        raise CssdError(f"{map_path}: a quicklook needs a map with at most 255 classes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, not a raster
        with rasterio.open(png_path, "w", driver="PNG", width=data.shape[1], height=data.shape[0],
                           count=1, dtype="uint8") as dst:
            dst.write(data, 1)
            dst.write_colormap(1, cmap)
    aux = png_path + ".aux.xml"
    if os.path.exists(aux):
        os.unlink(aux)
