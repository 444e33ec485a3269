"""Pixels to leave out of training and prediction: the product's quality layers and ``--mask``.

The result is one lazy (y, x) boolean Dask array on the scene's grid and chunks, True where a
pixel is left out; :func:`cssd_geo.bands.prepare` turns those pixels into NaN, so they are never
training pixels and are nodata in the map.

``--mask`` is a raster (non-zero = leave out; e.g. a product's quality layer as a file) or a
vector layer of the areas to keep. A raster on another grid is resampled to the scene's
(nearest neighbour) through GDAL's warped VRT; vector areas are rasterised chunk by chunk.
"""
from __future__ import annotations

import os
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from .errors import CssdError, first_line
from .io.scene import QUALITY_PREFIX, Grid, scene_grid

VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb", ".kml", ".sqlite", ".gml")


def quality_layers(scene: xr.DataArray) -> list[str]:
    """The names of the product's quality layers the scene carries (``quality_<name>`` coordinates)."""
    return [str(c)[len(QUALITY_PREFIX):] for c in scene.coords if str(c).startswith(QUALITY_PREFIX)]


def scene_mask(scene: xr.DataArray, mask: str | os.PathLike[str] | None, product_masks: bool) -> dsa.Array | None:
    """The pixels of ``scene`` to leave out: its product's quality layers (unless
    ``product_masks`` is False) and the ``mask`` file; None when there are none."""
    parts: list[dsa.Array] = []
    spatial = scene.data.chunks[1:]
    if product_masks:
        for name in quality_layers(scene):
            layer = scene[QUALITY_PREFIX + name].data
            layer = layer if isinstance(layer, dsa.Array) else dsa.from_array(np.asarray(layer))
            parts.append(layer.astype(bool).rechunk(spatial))
    if mask is not None:
        path = os.fspath(mask)
        if not os.path.exists(path):
            raise CssdError(f"{path}: mask file not found; check the --mask path")
        grid = scene_grid(scene)
        if path.lower().endswith(VECTOR_SUFFIXES) or os.path.isdir(path) and not path.endswith(".zarr"):
            parts.append(_outside_areas(path, grid, spatial))
        else:
            parts.append(_raster_mask(path, grid, spatial))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = out | part
    return out


def _raster_mask(path: str, grid: Grid, chunks: tuple[tuple[int, ...], ...]) -> dsa.Array:
    """Non-zero (and not nodata) pixels of band 1 of the raster at ``path``, on ``grid``."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.vrt import WarpedVRT

    try:
        with rasterio.open(path) as ds:
            same = ds.crs == grid.crs and ds.transform == grid.transform and ds.shape == (grid.height, grid.width)
            if ds.crs is None and not same:
                raise CssdError(f"{path}: the mask raster has no CRS and is not on the scene's grid; "
                                "give it the scene's CRS or grid")
            nodata = ds.nodata
    except RasterioIOError as exc:
        raise CssdError(f"{path}: not a raster or vector layer GDAL can read ({first_line(exc)}); give a GeoTIFF "
                        "mask (non-zero = leave out) or a vector layer of the areas to keep") from exc

    def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        with rasterio.open(path) as ds:
            if same:
                values = ds.read(1, window=window)
            else:
                with WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                               resampling=Resampling.nearest) as vrt:
                    values = vrt.read(1, window=window)
        out = values != 0
        if nodata is not None:
            out &= values != nodata
        return out

    return dsa.map_blocks(block, dtype=bool, chunks=chunks, meta=np.empty((0, 0), dtype=bool))


def _outside_areas(path: str, grid: Grid, chunks: tuple[tuple[int, ...], ...]) -> dsa.Array:
    """Pixels whose centre is outside every area of the vector layer at ``path``."""
    from rasterio import features, windows

    from .io.vector import read_vector

    frame = read_vector(path)
    if grid.crs is not None and frame.crs != grid.crs:
        frame = frame.to_crs(grid.crs)
    shapes = [g for g in frame.geometry if g is not None and not g.is_empty]
    if not shapes:
        raise CssdError(f"{path}: the mask layer has no areas; give polygons of the areas to keep")

    def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        window = windows.Window(c0, r0, c1 - c0, r1 - r0)
        inside = features.geometry_mask(shapes, out_shape=(r1 - r0, c1 - c0),
                                        transform=windows.transform(window, grid.transform), invert=True)
        return ~inside

    return dsa.map_blocks(block, dtype=bool, chunks=chunks, meta=np.empty((0, 0), dtype=bool))
