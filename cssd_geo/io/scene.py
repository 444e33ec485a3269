"""Scenes: GeoTIFF / ENVI / anything GDAL reads, and Zarr, as a lazy (band, y, x) DataArray."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import dask.array as dsa
import numpy as np
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from ..errors import CssdError, first_line

if TYPE_CHECKING:
    import rasterio.io

CubeArray = TypeVar("CubeArray", np.ndarray, dsa.Array)  # a numpy or dask (band, y, x) array

QUALITY_PREFIX = "quality_"  # (y, x) coordinates named quality_<layer>: a product's masks, True = leave out
DEFAULT_CHUNK = 512
STATS_PIXELS = 1_000_000  # band statistics come from at most this many pixels

# Wavelengths are kept in nanometres; these are the unit spellings seen in ENVI headers
# and GDAL metadata, with the factor that turns them into nm.
_TO_NM = {"nanometers": 1.0, "nanometer": 1.0, "nm": 1.0, "micrometers": 1000.0,
          "micrometer": 1000.0, "microns": 1000.0, "um": 1000.0, "µm": 1000.0,
          "millimeters": 1e6, "mm": 1e6}


@dataclass(frozen=True)
class Grid:
    """The georeferenced pixel grid of a scene or map."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int


def _chunks(chunks: int | dict | None) -> dict:
    if chunks is None:
        return {"band": -1, "y": DEFAULT_CHUNK, "x": DEFAULT_CHUNK}
    if isinstance(chunks, int):
        return {"band": -1, "y": chunks, "x": chunks}
    return dict(chunks)


def open_scene(path: str | os.PathLike, chunks: int | dict | None = None) -> xr.DataArray:
    """Open a hyperspectral scene lazily as a Dask-chunked DataArray with dims (band, y, x).

    GeoTIFF, ENVI (plain or gzip-compressed) and every other GDAL raster are read through
    rasterio; a folder ending in ``.zarr`` is read with xarray (one 3-D variable with a CRS).
    The result carries CRS, transform and nodata (``da.rio``) and, when the file has them,
    the coordinates ``band_name`` and ``wavelength`` (nm) along ``band``.
    ``chunks`` is the spatial chunk side in pixels or a dask chunks mapping.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CssdError(f"{path}: scene file not found; check the path")
    from .products import find_reader

    reader = find_reader(path)
    if reader is not None:
        da = reader.read(path, _chunks(chunks))
    elif _is_zarr(path):
        da = _open_zarr(path, _chunks(chunks))
    else:
        da = _open_gdal(path, _chunks(chunks))
    if da.sizes["band"] < 1 or da.sizes["y"] < 1 or da.sizes["x"] < 1:
        raise CssdError(f"{path}: the scene is empty ({dict(da.sizes)}); use a raster with pixels and bands")
    da.attrs["source"] = path
    return da


def _is_zarr(path: str) -> bool:
    return path.rstrip("/").endswith(".zarr") or os.path.exists(os.path.join(path, ".zattrs")) \
        or os.path.exists(os.path.join(path, "zarr.json"))


def _open_gdal(path: str, chunks: dict) -> xr.DataArray:
    import rasterio
    import rioxarray
    from rasterio.errors import RasterioIOError

    if os.path.isdir(path):
        raise CssdError(f"{path}: is a folder, not a raster; give a GeoTIFF/ENVI file or a .zarr store")
    try:
        with rasterio.open(path) as ds:
            names, wavelengths = _band_metadata(ds)
            nodata = ds.nodata
            scale, offset = np.asarray(ds.scales, dtype="float64"), np.asarray(ds.offsets, dtype="float64")
            bad = _envi_bad_bands(ds)
        raw = rioxarray.open_rasterio(path, chunks=chunks, masked=False, cache=False,
                                      lock=False, parse_coordinates=True)
    except RasterioIOError as exc:
        raise CssdError(f"{path}: not a raster GDAL can read ({first_line(exc)}); "
                        "give a GeoTIFF, ENVI or other GDAL raster") from exc
    if isinstance(raw, list) or isinstance(raw, xr.Dataset):
        raise CssdError(f"{path}: holds several subdatasets; open one of them (e.g. NETCDF:file:var)")
    da = xr.DataArray(raw.data, dims=("band", "y", "x"),
                      coords={"band": np.arange(1, raw.sizes["band"] + 1), "y": raw["y"].values,
                              "x": raw["x"].values}, name="scene")
    if raw.rio.crs is not None:
        da = da.rio.write_crs(raw.rio.crs)
    da = da.rio.write_transform(raw.rio.transform(recalc=False))
    da = _attach_bands(da, names, wavelengths)
    if not (np.all(scale == 1.0) and np.all(offset == 0.0)):  # GDAL scale/offset (ENVI data gain/offset values)
        da = da.assign_coords(scale=("band", scale), offset=("band", offset))
    if bad is not None:
        da = da.assign_coords(bad_band=("band", bad))
    if nodata is not None:
        da = da.rio.write_nodata(nodata, encoded=False)
    return da


def _envi_bad_bands(ds: rasterio.io.DatasetReader) -> np.ndarray | None:
    """ENVI's bad-band list (``bbl = {1, 1, 0, ...}``, 0 = bad) as True where a band is bad."""
    text = ds.tags(ns="ENVI").get("bbl") if "ENVI" in (ds.tag_namespaces() or []) else None
    if not text:
        return None
    try:
        flags = [float(v) for v in text.strip("{} ").split(",")]
    except ValueError:
        return None
    return np.asarray(flags) == 0 if len(flags) == ds.count else None


def _band_metadata(ds: rasterio.io.DatasetReader) -> tuple[list[str] | None, list[float] | None]:
    """Band names and wavelengths (nm) from GDAL band descriptions and metadata."""
    descriptions = list(ds.descriptions)
    names = [d or f"band {i + 1}" for i, d in enumerate(descriptions)] if any(descriptions) else None
    global_units = ds.tags().get("wavelength_units")
    wavelengths: list[float] = []
    for i in range(1, ds.count + 1):
        tags = ds.tags(i)
        value = tags.get("wavelength") or tags.get("WAVELENGTH")
        units = (tags.get("wavelength_units") or global_units or "nanometers").strip().lower()
        try:
            wavelengths.append(float(value) * _TO_NM.get(units, 1.0))
        except (TypeError, ValueError):
            wavelengths = []
            break
    return names, (wavelengths or None)


def _attach_bands(da: xr.DataArray, names: Sequence[str] | None,
                  wavelengths: Sequence[float] | None) -> xr.DataArray:
    if names is not None and len(names) == da.sizes["band"]:
        da = da.assign_coords(band_name=("band", [str(n) for n in names]))
    if wavelengths is not None and len(wavelengths) == da.sizes["band"]:
        da = da.assign_coords(wavelength=("band", np.asarray(wavelengths, dtype="float64")))
    return da


def _open_zarr(path: str, chunks: dict) -> xr.DataArray:
    try:
        ds = xr.open_zarr(path, decode_coords="all", chunks=None)
    except Exception as exc:  # zarr raises many types for a store it cannot read
        raise CssdError(f"{path}: not a readable Zarr store ({first_line(exc)}); "
                        "give a store written by cssd-geo or xarray") from exc
    cubes = [name for name, var in ds.data_vars.items() if var.ndim == 3]
    if len(cubes) != 1:
        raise CssdError(f"{path}: a scene store must hold exactly one 3-D variable, found "
                        f"{cubes or 'none'}; write the cube as the store's only 3-D variable")
    var = ds[cubes[0]]
    spatial = [d for d in var.dims if d in ("y", "x", "lat", "lon", "latitude", "longitude")]
    if len(spatial) != 2:
        raise CssdError(f"{path}: variable {cubes[0]!r} has dims {var.dims}; expected (band, y, x)")
    band_dim = next(d for d in var.dims if d not in spatial)
    var = var.rename({band_dim: "band", spatial[0]: "y", spatial[1]: "x"}).transpose("band", "y", "x")
    crs = var.rio.crs
    transform = var.rio.transform(recalc=True)
    nodata = var.rio.nodata if var.rio.nodata is not None else var.rio.encoded_nodata
    names = var["band_name"].values.tolist() if "band_name" in var.coords else None
    wl = var["wavelength"].values.astype("float64").tolist() if "wavelength" in var.coords else None
    data = var.data
    import dask.array as dsa

    data = data.rechunk((-1, chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK))) \
        if isinstance(data, dsa.Array) else dsa.from_array(data, chunks=(-1, chunks["y"], chunks["x"]))
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": np.arange(1, var.sizes["band"] + 1), "y": var["y"].values,
                              "x": var["x"].values}, name="scene")
    if crs is not None:
        da = da.rio.write_crs(crs)
    da = da.rio.write_transform(transform)
    da = _attach_bands(da, names, wl)
    if nodata is not None:
        da = da.rio.write_nodata(nodata, encoded=False)
    return da


def scene_grid(da: xr.DataArray) -> Grid:
    """CRS, transform and size of a scene opened by :func:`open_scene`."""
    return Grid(da.rio.crs, da.rio.transform(recalc=False), int(da.sizes["y"]), int(da.sizes["x"]))


def scene_nodata(da: xr.DataArray) -> float | None:
    """The scene's nodata value, or None."""
    return da.rio.nodata


def band_names(da: xr.DataArray) -> list[str] | None:
    """Band names when the file has them."""
    return [str(v) for v in da["band_name"].values] if "band_name" in da.coords else None


def band_wavelengths(da: xr.DataArray) -> list[float] | None:
    """Band centre wavelengths in nm when the file has them."""
    return [float(v) for v in da["wavelength"].values] if "wavelength" in da.coords else None


def valid_pixels(data: CubeArray, nodata: float | None) -> CubeArray:
    """(y, x) mask of pixels finite and not nodata in every band, for a numpy or dask
    (band, y, x) array (the result is of the same kind)."""
    ok = np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        ok = ok & (data != nodata)
    return cast(CubeArray, ok.all(axis=0))  # numpy's functions keep a dask array lazy


def mask_invalid(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """Set every band of a pixel to NaN where any band is nodata or not finite."""
    invalid = ~valid_pixels(block, nodata)
    if invalid.any():
        block[:, invalid] = np.nan
    return block


def band_statistics(scene: xr.DataArray, max_pixels: int = STATS_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over valid pixels, from a regular subsample of
    at most ``max_pixels`` pixels on large scenes; computed block by block with dask."""
    import dask
    import dask.array as dsa

    step = max(1, math.ceil(math.sqrt(scene.sizes["y"] * scene.sizes["x"] / max_pixels)))
    data = scene.data[:, ::step, ::step]
    ok = valid_pixels(data, scene_nodata(scene))
    masked = dsa.where(ok, data.astype("float64"), 0.0)
    count, total, square = dask.compute(ok.sum(), masked.sum(axis=(1, 2)), (masked * masked).sum(axis=(1, 2)))
    if count == 0:
        raise CssdError(f"{scene.attrs.get('source', 'scene')}: every pixel is nodata or not finite; "
                        "check the scene's nodata value")
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)
