"""EMIT Level 2A surface reflectance granules: ``EMIT_L2A_RFL_<VVV>_<YYYYMMDDTHHMMSS>_<orbit>_<scene>.nc``.

The granule is NetCDF4 (HDF5), in sensor geometry, as LP DAAC distributes it. Layout as in the
EMITL2ARFL V001 product description (LP DAAC), the EMIT Level 2A Mask Product User Guide
(v0.1, JPL D-107874) and the EMIT science data system's NetCDF formatting code:

- ``reflectance``: float32 (downtrack, crosstrack, bands), fill -9999; the water-vapour bands
  hold -0.01 (no retrieval there);
- ``sensor_band_parameters/wavelengths`` and ``fwhm`` (float32, nm) and ``good_wavelengths``
  (uint8: 1 = usable, 0 = not);
- ``location/glt_x`` and ``glt_y``: int32 (ortho_y, ortho_x), the geometry lookup table. For each
  pixel of a north-up output grid they give the 1-based crosstrack (x) and downtrack (y) index of
  the sensor pixel it shows; 0 = none. (EMIT writes no negative index; the ENVI convention, a
  gap filled from its nearest neighbour, is followed: the absolute value is the source.)
- root attributes ``geotransform`` (6 floats, GDAL order, degrees) and ``spatial_ref`` (WKT of
  WGS 84): the output grid.

The reader returns the reflectance on the GLT grid, values as stored, nodata -9999 (also where
the GLT has no source), ``bad_band`` where ``good_wavelengths`` is 0. It is lazy, chunk by
chunk: opening reads only the attributes, band parameters and the GLT (two int32 images); each
output chunk is one Dask task that reads the sensor pixels its GLT block points at,
:data:`STRIP_LINES` sensor lines at a time and of each strip only the columns it needs.

Quality layers come from the mask granule of the same scene beside it
(``EMIT_L2A_MASK_<VVV>_<same time, orbit, scene>.nc``, the same version preferred): ``mask``
float32 (downtrack, crosstrack, bands) with the layer names in
``sensor_band_parameters/mask_bands``, orthorectified through the reflectance's GLT. The flags
that say a pixel does not show clear ground leave it out (:data:`QUALITY_FLAGS`): cloud,
cirrus, dilated cloud (cloud plus the buffer its shadow may fall in), spacecraft (ISS structure
in view) and, in version 2 mask granules, the SpecTf cloud flag. Not the water flag (water is
land cover to map), not the AOD and water-vapour data layers, and not the aggregate flag, which
also holds water and an aerosol threshold. Other EMIT products (L1B radiance, the L2A mask or
uncertainty granule on its own, ...) are refused by name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ...errors import CssdError, first_line
from . import QUALITY_PREFIX, ProductReader

FILL = -9999.0
STRIP_LINES = 64  # sensor lines one read takes: bounds the memory a chunk needs (64 x cols x 285 float32)
# quality layer -> the mask layer name, lower case without spaces or dashes (V001: "Cloud flag",
# V002: "Cloud Flag", "SpecTf-Cloud Flag")
QUALITY_FLAGS = {"cloud": "cloudflag", "cirrus": "cirrusflag", "dilated_cloud": "dilatedcloudflag",
                 "spacecraft": "spacecraftflag", "spectf_cloud": "spectfcloudflag"}
_GRANULE = re.compile(r"^EMIT_(L\d[A-Z]?)_([A-Z0-9]+)_(?:(\d{3})_(.+))?", re.IGNORECASE)
_REQUIRED = ("reflectance", "sensor_band_parameters/wavelengths", "location/glt_x", "location/glt_y")


def matches(path: str) -> bool:
    """An EMIT granule (``EMIT_<level>_<product>_...nc``), whatever its level: the file name only."""
    return path.lower().endswith(".nc") and bool(_GRANULE.match(os.path.basename(path))) and os.path.isfile(path)


@dataclass(frozen=True)
class _Granule:
    """What opening reads of a reflectance granule: band parameters, output grid and GLT."""

    sensor_shape: tuple[int, int]  # downtrack, crosstrack
    wavelengths: np.ndarray
    fwhm: np.ndarray | None
    good: np.ndarray | None
    geotransform: tuple[float, ...]
    crs_wkt: str
    glt_x: np.ndarray
    glt_y: np.ndarray


def _text(value: Any) -> str:
    """An HDF5 string attribute or element (fixed-length bytes or variable-length str) as str."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode() if isinstance(value, bytes) else str(value)


def _refuse_other_products(path: str) -> None:
    name = _GRANULE.match(os.path.basename(path))
    level, product = (name.group(1).upper(), name.group(2).upper()) if name else ("unknown", "unknown")
    if (level, product) != ("L2A", "RFL"):
        kind = "radiance granule" if product == "RAD" else f"{product} granule"
        raise CssdError(f"{path}: EMIT {level} {kind}; cssd-geo reads EMIT L2A surface reflectance (EMIT_L2A_RFL): "
                        "use the L2A reflectance granule")


def _open_granule(path: str) -> _Granule:
    """Read and check everything but the reflectance itself."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [v for v in _REQUIRED if v not in f] + \
                [a for a in ("geotransform", "spatial_ref") if a not in f.attrs]
            if missing:
                raise CssdError(f"{path}: EMIT L2A granule without {', '.join(missing)}; the granule is incomplete: "
                                "download it again")
            shape = f["reflectance"].shape
            params = f["sensor_band_parameters"]
            wavelengths = np.asarray(params["wavelengths"][()], dtype=np.float64)
            fwhm = np.asarray(params["fwhm"][()], dtype=np.float64) if "fwhm" in params else None
            good = np.asarray(params["good_wavelengths"][()]) if "good_wavelengths" in params else None
            gt = tuple(float(v) for v in np.ravel(f.attrs["geotransform"]))
            wkt = _text(f.attrs["spatial_ref"])
            glt_x = np.asarray(f["location/glt_x"][()])
            glt_y = np.asarray(f["location/glt_y"][()])
    except OSError as exc:
        raise CssdError(f"{path}: not a readable NetCDF4/HDF5 file ({first_line(exc)}); download the granule "
                        "again") from exc
    if len(shape) != 3 or shape[2] != wavelengths.size or glt_x.ndim != 2 or glt_x.shape != glt_y.shape:
        raise CssdError(f"{path}: EMIT L2A granule with reflectance {shape}, {wavelengths.size} wavelengths and GLT "
                        f"{glt_x.shape}/{glt_y.shape}; expected (downtrack, crosstrack, bands) and two equal GLT "
                        "images: download the granule again")
    if glt_x.size and (np.abs(glt_y).max() > shape[0] or np.abs(glt_x).max() > shape[1]):
        raise CssdError(f"{path}: the GLT points outside the {shape[0]} x {shape[1]} sensor pixels of the "
                        "reflectance; the granule is damaged: download it again")
    if len(gt) != 6 or gt[2] != 0 or gt[4] != 0 or gt[1] <= 0 or gt[5] >= 0:
        raise CssdError(f"{path}: the GLT grid's geotransform {list(gt)} is not a north-up grid; cssd-geo maps "
                        "north-up grids only: orthorectify the granule with another tool and give the GeoTIFF")
    return _Granule((int(shape[0]), int(shape[1])), wavelengths, fwhm, good, gt, wkt, glt_x, glt_y)


def _read_window(dataset: Any, rows: slice, cols: slice) -> np.ndarray:
    """Sensor lines ``rows`` x columns ``cols`` of a (downtrack, crosstrack, bands) variable, every band."""
    return np.asarray(dataset[rows, cols, :])


def _ortho_block(glt_x: np.ndarray, glt_y: np.ndarray, *, path: str, variable: str, count: int,
                 layers: tuple[int, ...] | None = None) -> np.ndarray:
    """One output chunk: (count, *glt_x.shape) float32 values of ``variable`` (its ``layers``, or
    every band) at the sensor pixels the GLT block points at; :data:`FILL` where it points at none."""
    import h5py

    out = np.full((count, *glt_x.shape), FILL, dtype=np.float32)
    cols, rows = np.abs(glt_x.astype(np.int64)) - 1, np.abs(glt_y.astype(np.int64)) - 1
    ys, xs = np.nonzero((cols >= 0) & (rows >= 0))
    if ys.size == 0:
        return out  # no source pixel: nothing to read
    src_r, src_c = rows[ys, xs], cols[ys, xs]
    strip = (src_r - src_r.min()) // STRIP_LINES
    order = np.argsort(strip, kind="stable")
    with h5py.File(path, "r") as f:
        dataset = f[variable]
        for part in np.split(order, np.flatnonzero(np.diff(strip[order])) + 1):
            r, c = src_r[part], src_c[part]
            r0, c0 = int(r.min()), int(c.min())
            window = _read_window(dataset, slice(r0, int(r.max()) + 1), slice(c0, int(c.max()) + 1))
            if layers is not None:
                window = window[:, :, list(layers)]
            out[:, ys[part], xs[part]] = window[r - r0, c - c0].T
    return out


def _flags_block(glt_x: np.ndarray, glt_y: np.ndarray, *, path: str, layers: tuple[int, ...]) -> np.ndarray:
    """(len(layers), *glt_x.shape) bool: where the mask granule's ``layers`` are set at the pixels' sources."""
    values = _ortho_block(glt_x, glt_y, path=path, variable="mask", count=len(layers), layers=layers)
    return values > 0.5  # flags are 0 or 1; fill (-9999) is no flag


def read(path: str, chunks: dict[str, int]) -> xr.DataArray:
    """The reflectance of an EMIT L2A granule on its GLT grid, with its mask granule's flags as quality layers."""
    import dask.array as dsa
    import rioxarray  # noqa: F401 (registers the .rio accessor)
    from affine import Affine
    from dask.base import tokenize
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    _refuse_other_products(path)
    granule = _open_granule(path)
    try:
        crs = CRS.from_wkt(granule.crs_wkt)
    except CRSError as exc:
        raise CssdError(f"{path}: the spatial_ref attribute is not a WKT CRS ({first_line(exc)}); the granule is "
                        "damaged: download it again") from exc
    source = os.path.abspath(path)  # the tasks read it later, maybe from another working directory
    token = tokenize(source, os.stat(source).st_mtime_ns, chunks)
    spatial = (chunks.get("y", 512), chunks.get("x", 512))
    gx = dsa.from_array(granule.glt_x, chunks=spatial, name=f"emit-glt-x-{token}")
    gy = dsa.from_array(granule.glt_y, chunks=spatial, name=f"emit-glt-y-{token}")
    bands = granule.wavelengths.size
    data = dsa.map_blocks(_ortho_block, gx, gy, path=source, variable="reflectance", count=bands, new_axis=0,
                          chunks=((bands,), *gx.chunks), dtype=np.float32, name=f"emit-l2a-rfl-{token}",
                          meta=np.empty((0, 0, 0), dtype=np.float32))
    gt = granule.geotransform
    height, width = granule.glt_x.shape
    da = xr.DataArray(data, dims=("band", "y", "x"), name="scene",
                      coords={"band": np.arange(1, bands + 1),
                              "y": gt[3] + gt[5] * (np.arange(height) + 0.5),
                              "x": gt[0] + gt[1] * (np.arange(width) + 0.5)})
    da = da.rio.write_crs(crs).rio.write_transform(Affine.from_gdal(*gt))
    da = da.assign_coords(band_name=("band", [f"band {i}" for i in range(1, bands + 1)]),
                          wavelength=("band", granule.wavelengths), scale=("band", np.ones(bands)),
                          offset=("band", np.zeros(bands)))
    if granule.fwhm is not None and granule.fwhm.size == bands:
        da = da.assign_coords(fwhm=("band", granule.fwhm))
    if granule.good is not None and granule.good.size == bands:
        da = da.assign_coords(bad_band=("band", granule.good == 0))
    mask_path = mask_granule(path)
    if mask_path is not None:
        names, layers = _mask_layers(mask_path, granule.sensor_shape)
        mask_source = os.path.abspath(mask_path)
        mask_token = tokenize(token, mask_source, os.stat(mask_source).st_mtime_ns)
        flags = dsa.map_blocks(_flags_block, gx, gy, path=mask_source, layers=layers, new_axis=0,
                               chunks=((len(layers),), *gx.chunks), dtype=bool, name=f"emit-l2a-mask-{mask_token}",
                               meta=np.empty((0, 0, 0), dtype=bool))
        da = da.assign_coords({QUALITY_PREFIX + name: (("y", "x"), flags[k]) for k, name in enumerate(names)})
    da = da.rio.write_nodata(FILL, encoded=False)
    da.attrs["product"] = "EMIT L2A"
    return da


def mask_granule(path: str) -> str | None:
    """The L2A mask granule of the same scene beside the reflectance granule ``path`` (the same
    version, else the newest), or None."""
    folder, base = os.path.split(path)
    name = _GRANULE.match(base)
    if name is None or name.group(3) is None:
        return None
    version, scene = name.group(3), name.group(4)
    same = re.compile(rf"^EMIT_L2A_MASK_(\d{{3}})_{re.escape(scene)}$", re.IGNORECASE)
    found = [(m.group(1) != version, -int(m.group(1)), entry) for entry in os.listdir(folder or ".")
             if (m := same.match(entry))]
    return os.path.join(folder, min(found)[2]) if found else None


def _mask_layers(mask_path: str, sensor_shape: tuple[int, int]) -> tuple[list[str], tuple[int, ...]]:
    """The quality layers the mask granule has (names) and their band indices in ``mask``."""
    import h5py

    fix = "download it again, or move it away to map without EMIT's cloud flags"
    try:
        with h5py.File(mask_path, "r") as f:
            missing = [v for v in ("mask", "sensor_band_parameters/mask_bands") if v not in f]
            if missing:
                raise CssdError(f"{mask_path}: EMIT mask granule without {', '.join(missing)}; {fix}")
            shape = f["mask"].shape
            names = [_text(n) for n in np.ravel(f["sensor_band_parameters/mask_bands"][()])]
    except OSError as exc:
        raise CssdError(f"{mask_path}: not a readable EMIT mask granule ({first_line(exc)}); {fix}") from exc
    if len(shape) != 3 or tuple(shape[:2]) != sensor_shape or shape[2] != len(names):
        raise CssdError(f"{mask_path}: mask {tuple(shape)} with {len(names)} layer names does not fit the "
                        f"reflectance's {sensor_shape[0]} x {sensor_shape[1]} sensor pixels; use the mask granule "
                        f"of the same scene, or move it away to map without EMIT's cloud flags")
    keys = [re.sub(r"[^a-z0-9]", "", n.lower()) for n in names]
    found = [(layer, keys.index(key)) for layer, key in QUALITY_FLAGS.items() if key in keys]
    if not found:
        raise CssdError(f"{mask_path}: none of the mask layers ({', '.join(names)}) is a cloud, cirrus or "
                        f"spacecraft flag cssd-geo knows; {fix}")
    return [layer for layer, _ in found], tuple(index for _, index in found)


READER = ProductReader("EMIT L2A", matches, read)
