"""Class maps and probabilities to GeoTIFF (tiled, compressed, optionally Cloud-Optimized) or
Zarr. Every file is written under a hidden temporary name from the run's
:class:`~cssd_geo.outputs.OutputSet` and published with the run's other outputs when it has
finished, so an interrupted or failed run never leaves a file that looks finished.

A prediction writes through a :class:`MapWriter`: :class:`GeoTiffMaps` (the class map, with
its QGIS style, and the optional probability and confidence GeoTIFFs) or
:class:`ZarrMapWriter` (one store with every layer). Both give one ``dask.array.store``
target per layer in ``targets``.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Protocol
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..classes import ClassInfo, classes_from_json, classes_to_json
from ..errors import CssdError, writing
from ..outputs import OutputSet, output_file
from .scene import Grid

CLASSES_TAG = "CSSD_CLASSES"
BLOCK = 512
# One lock for the block writes of every GeoTIFF being written (map, probabilities,
# confidence) and for closing them: GDAL never writes two files from dask's threads at once,
# and never into a dataset being closed. When one chunk fails, dask raises at once while the
# other threads finish their chunks; their writes then reached a closed dataset and GDAL
# crashed the process (segfault, seen in test_failed_prediction_leaves_nothing on a busy
# machine, and once in the QGIS suite). A write after the close is refused instead.
_GDAL_WRITES = threading.Lock()
PROBABILITY_SCALE = 254  # probabilities are stored as round(p * 254); 255 is nodata
PROBABILITY_NODATA = 255


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


class GeoTiffWriter:
    """A multi-band GeoTIFF written block by block (a ``dask.array.store`` target).

    As a context manager it writes to a temporary file of ``outputs`` (``tmp``) and, on a
    clean exit, finishes it (converting to a Cloud-Optimized GeoTIFF with overviews when
    ``cog``); ``outputs`` publishes it as ``path`` with the run's other outputs.
    """

    def __init__(self, path: str, grid: Grid, count: int, dtype: str, nodata: float | None,
                 outputs: OutputSet, cog: bool = False) -> None:
        self.path, self.grid, self.count, self.dtype, self.nodata, self.cog = path, grid, count, dtype, nodata, cog
        self.outputs = outputs
        self.tmp = outputs.temporary(path, suffix=".tif")
        self.ds: Any = None

    def __enter__(self) -> GeoTiffWriter:
        try:
            with writing(self.path):
                self._open()
        except BaseException:
            if self.ds is not None:
                self.ds.close()
            raise
        return self

    def _open(self) -> None:
        self.ds = rasterio.open(
            self.tmp, "w", driver="GTiff", width=self.grid.width, height=self.grid.height, count=self.count,
            dtype=self.dtype, nodata=self.nodata, crs=self.grid.crs, transform=self.grid.transform,
            tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", BIGTIFF="IF_SAFER",
            interleave="band")

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        """Write ``block`` at ``key``: (row slice, col slice), or (band slice, row slice, col slice)."""
        if len(key) == 2:
            key, block = (slice(0, 1),) + tuple(key), block[None]
        bands, rows, cols = key
        indexes = list(range((bands.start or 0) + 1, (bands.start or 0) + 1 + block.shape[0]))
        window = Window(cols.start or 0, rows.start or 0, block.shape[2], block.shape[1])
        with _GDAL_WRITES, writing(self.path):
            if self.ds is None or self.ds.closed:
                raise RuntimeError(f"{self.path}: a chunk finished after the run had stopped; it was not written")
            self.ds.write(block.astype(self.dtype, copy=False), indexes=indexes, window=window)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                with writing(self.path):
                    self._finish()
        finally:
            with _GDAL_WRITES:
                if self.ds is not None and not self.ds.closed:
                    self.ds.close()

    def _finish(self) -> None:
        with _GDAL_WRITES:
            self.ds.close()
        if self.cog:
            cog = self.outputs.scratch(self.path, suffix=".cog.tif")
            rasterio.shutil.copy(self.tmp, cog, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK,
                                 OVERVIEWS="AUTO", RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
            os.replace(cog, self.tmp)


class ClassMapWriter(GeoTiffWriter):
    """A single-band class map: colour table, class names (band tags ``CLASS_<id>`` and the
    class table as JSON in ``CSSD_CLASSES``) and a QGIS style ``<name>.qml`` beside it."""

    def __init__(self, path: str, grid: Grid, classes: Sequence[ClassInfo], outputs: OutputSet,
                 tags: Mapping[str, str] | None = None, cog: bool = False) -> None:
        self.classes = list(classes)
        dtype, self.map_nodata = map_encoding(self.classes)
        super().__init__(path, grid, 1, dtype, self.map_nodata, outputs, cog)
        self.tags = dict(tags or {})

    def __enter__(self) -> ClassMapWriter:
        super().__enter__()
        colors = {c.id: (*c.color, 255) for c in self.classes}
        colors[self.map_nodata] = (0, 0, 0, 0)
        self.ds.write_colormap(1, colors)  # before any pixel: GDAL fixes the photometry then
        self.ds.set_band_description(1, "class id")
        self.ds.update_tags(**{CLASSES_TAG: classes_to_json(self.classes)}, **self.tags)
        self.ds.update_tags(1, **{f"CLASS_{c.id}": c.name for c in self.classes})
        return self

    def _finish(self) -> None:
        super()._finish()
        with output_file(os.path.splitext(self.path)[0] + ".qml", self.outputs) as tmp, \
                open(tmp, "w", encoding="utf-8") as f:
            f.write(qgis_style(self.classes))


class ProbabilityWriter(GeoTiffWriter):
    """Class probabilities (one band per class, or one confidence band) as uint8:
    ``round(p * 254)``, 255 = nodata; the band scale 1/254 lets GDAL readers get p back."""

    def __init__(self, path: str, grid: Grid, names: Sequence[str], outputs: OutputSet, cog: bool = False) -> None:
        super().__init__(path, grid, len(names), "uint8", PROBABILITY_NODATA, outputs, cog)
        self.names = list(names)

    def __enter__(self) -> ProbabilityWriter:
        super().__enter__()
        for i, name in enumerate(self.names, start=1):
            self.ds.set_band_description(i, name)
        self.ds.scales = [1.0 / PROBABILITY_SCALE] * self.count
        self.ds.offsets = [0.0] * self.count
        return self


def encode_probabilities(p: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probabilities 0..1 -> uint8 0..254, 255 where not ``valid``."""
    out = np.rint(p * PROBABILITY_SCALE).astype(np.uint8)
    out[..., ~valid] = PROBABILITY_NODATA
    return out


def decode_probabilities(stored: Any) -> Any:
    """uint8 0..254 as stored -> float32 probabilities 0..1, NaN where nodata (255); numpy or
    dask arrays alike (the inverse of :func:`encode_probabilities`)."""
    return np.where(stored == PROBABILITY_NODATA, np.float32(np.nan),
                    stored.astype(np.float32) * np.float32(1.0 / PROBABILITY_SCALE))


class MapWriter(Protocol):
    """What a prediction writes through: a context manager with one ``dask.array.store``
    target per layer (``classes``, and ``probabilities`` / ``confidence`` when asked for), and
    the path where the finished class map can be read before the run publishes it."""

    targets: dict[str, Any]
    readable_map: str

    def __enter__(self) -> MapWriter: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def side_outputs(output: str, layers: Sequence[str]) -> dict[str, str]:
    """Paths of the probability and confidence GeoTIFFs that go with a class map ``output``
    (``<name>_probabilities.tif``, ``<name>_confidence.tif``), for those of ``layers`` asked for."""
    stem, ext = os.path.splitext(output)
    return {name: f"{stem}_{name}{ext}" for name in ("probabilities", "confidence") if name in layers}


class GeoTiffMaps:
    """The GeoTIFFs of a prediction: the class map ``path`` (with its ``.qml`` style) and,
    for the layers asked for, ``<name>_probabilities.tif`` and ``<name>_confidence.tif``."""

    def __init__(self, path: str, grid: Grid, classes: Sequence[ClassInfo], layers: Sequence[str],
                 outputs: OutputSet, tags: Mapping[str, str] | None = None, cog: bool = False) -> None:
        self.path, self.grid, self.classes, self.layers = path, grid, list(classes), list(layers)
        self.outputs, self.tags, self.cog = outputs, dict(tags or {}), cog
        self.targets: dict[str, Any] = {}
        self._stack = ExitStack()
        self.readable_map = ""

    def __enter__(self) -> GeoTiffMaps:
        with self._stack as stack:
            class_map = ClassMapWriter(self.path, self.grid, self.classes, self.outputs, self.tags, self.cog)
            self.targets["classes"] = stack.enter_context(class_map)
            self.readable_map = class_map.tmp
            names = {"probabilities": [f"p({c.name})" for c in self.classes],
                     "confidence": ["confidence (max probability)"]}
            for layer, path in side_outputs(self.path, self.layers).items():
                self.targets[layer] = stack.enter_context(ProbabilityWriter(path, self.grid, names[layer],
                                                                            self.outputs, self.cog))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.__exit__(exc_type, exc, tb)


class ZarrMapWriter:
    """A Zarr store of class map layers (``classes`` (y, x), optional ``probabilities``
    (class, y, x) and ``confidence`` (y, x)) with CRS and transform (rioxarray conventions),
    chunked like the dask arrays that will fill it.

    As a context manager it creates the store (metadata, coordinates) as a temporary folder
    of ``outputs``, published as ``path`` with the run's other outputs, and exposes one
    ``dask.array.store`` target per layer in ``targets``.
    """

    def __init__(self, path: str, grid: Grid, classes: Sequence[ClassInfo], nodata: int,
                 layers: Mapping[str, Any], outputs: OutputSet) -> None:
        self.path, self.grid, self.classes, self.nodata, self.layers = path, grid, list(classes), nodata, dict(layers)
        self.targets: dict[str, Any] = {}
        self.readable_map = outputs.temporary(path, folder=True)

    def _dataset(self) -> Any:
        import rioxarray  # noqa: F401  (registers the .rio accessor)
        import xarray as xr
        from rasterio.transform import xy

        grid = self.grid
        ys = np.asarray(xy(grid.transform, np.arange(grid.height), np.zeros(grid.height, int))[1])
        xs = np.asarray(xy(grid.transform, np.zeros(grid.width, int), np.arange(grid.width))[0])
        variables = {}
        for name, array in self.layers.items():
            var = xr.DataArray(array, dims=("y", "x") if array.ndim == 2 else ("class", "y", "x"))
            if name == "classes":
                var.attrs.update(long_name="class id", classes=classes_to_json(self.classes))
                var.encoding["_FillValue"] = self.nodata
            else:
                var.attrs.update(long_name=f"{name}: probability = value / {PROBABILITY_SCALE}",
                                 probability_scale=1.0 / PROBABILITY_SCALE)
                var.encoding["_FillValue"] = PROBABILITY_NODATA
            variables[name] = var
        ds = xr.Dataset(variables, coords={"y": ys, "x": xs})
        if "probabilities" in self.layers:
            ds = ds.assign_coords({"class": [c.id for c in self.classes]})
        ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
        ds.attrs[CLASSES_TAG] = classes_to_json(self.classes)
        return ds

    def __enter__(self) -> ZarrMapWriter:
        import zarr

        with warnings.catch_warnings(), writing(self.path):
            # consolidated metadata lets readers open the store without a warning; zarr
            # notes that it is an extension of the Zarr 3 format
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            # metadata and coordinates only: the data variables are filled through targets
            self._dataset().to_zarr(self.readable_map, mode="w", compute=False, consolidated=True)
        group = zarr.open_group(self.readable_map, mode="r+")
        self.targets = {name: _GuardedTarget(group[name], self.path) for name in self.layers}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Nothing to close: zarr writes each block as it comes."""


class _GuardedTarget:
    """A ``dask.array.store`` target whose write failures name the output."""

    def __init__(self, array: Any, path: str) -> None:
        self.array, self.path = array, path

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        with writing(self.path):
            self.array[key] = block


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


QUICKLOOK_SIDE = 4096  # the longest side of a quicklook PNG, in pixels


def write_quicklook(map_path: str, png_path: str, outputs: OutputSet | None = None,
                    name: str | None = None) -> None:
    """A paletted PNG of a class map (nodata transparent), e.g. for a report; published at
    once or with ``outputs``. ``name`` is how errors call the map (default ``map_path``).
    A map wider or taller than QUICKLOOK_SIDE pixels is read decimated (nearest class, GDAL's
    overviews when the map has them) to fit that side, so memory stays small on any map."""
    with rasterio.open(map_path) as src:
        scale = max(src.width, src.height) / QUICKLOOK_SIDE
        shape = (src.height, src.width) if scale <= 1 else \
            (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        cmap = src.colormap(1)
    if data.dtype != np.uint8:
        raise CssdError(f"{name or map_path}: a quicklook needs a map with at most 255 classes")
    with warnings.catch_warnings(), writing(png_path), output_file(png_path, outputs, suffix=".png") as tmp:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, not a raster
        with rasterio.open(tmp, "w", driver="PNG", width=data.shape[1], height=data.shape[0],
                           count=1, dtype="uint8") as dst:
            dst.write(data, 1)
            dst.write_colormap(1, cmap)
        aux = tmp + ".aux.xml"
        if os.path.exists(aux):
            os.unlink(aux)
