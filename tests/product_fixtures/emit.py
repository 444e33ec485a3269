"""A small EMIT L2A reflectance granule and its mask granule, in the LP DAAC NetCDF4 layout.

Follows the EMIT Level 2A product user guide (EMIT L2A RFL / MASK, V001): files
``EMIT_L2A_RFL_001_<time>_<orbit>_<scene>.nc`` and ``EMIT_L2A_MASK_001_...nc``; root variable
``reflectance`` (downtrack, crosstrack, bands) float32, fill -9999; group
``sensor_band_parameters`` with ``wavelengths``, ``fwhm`` and ``good_wavelengths`` (0 in the
water-vapour bands); group ``location`` with ``glt_x``/``glt_y`` (int32, 1-based sensor
crosstrack/downtrack index of each north-up output pixel, 0 = none); root attributes
``geotransform`` (GDAL order, degrees) and ``spatial_ref`` (WKT of WGS 84); the mask granule's
``mask`` (downtrack, crosstrack, 8 layers) with names in ``sensor_band_parameters/mask_bands``.
EMIT's 285 bands span 381-2493 nm. The sensor geometry is the scene rotated by
:data:`ROTATION_DEG` (EMIT looks from the ISS, whose track is not north-south), so the GLT is not
the identity. Pixels are about 30 m (EMIT's are 60 m) so every class of the example has pixels;
values come from the example scene, laid over its footprint.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform as warp

from . import example_cube

GRANULE = "EMIT_{level}_{product}_001_20220903T163129_2224611_012.nc"
WAVELENGTHS = np.linspace(381.0, 2493.0, 285)
BAD = ((WAVELENGTHS > 1320) & (WAVELENGTHS < 1440)) | ((WAVELENGTHS > 1770) & (WAVELENGTHS < 1960))
MASK_BANDS = ["Cloud flag", "Cirrus flag", "Water flag", "Spacecraft Flag", "Dilated Cloud Flag", "AOD550",
              "H2O (g cm-2)", "Aggregate Flag"]
ROTATION_DEG = 14.0
STEP = 30.0  # metres between sensor pixels
CLOUD = (slice(10, 14), slice(20, 26))  # downtrack, crosstrack rows and columns flagged as cloud (sensor geometry)


def _sensor_geometry(example_crs: CRS, centre: tuple[float, float], shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Map x, y (UTM) of every sensor pixel: a grid of STEP metres rotated by ROTATION_DEG."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    u, v = (cols - shape[1] / 2) * STEP, (shape[0] / 2 - rows) * STEP
    a = np.deg2rad(ROTATION_DEG)
    return centre[0] + u * np.cos(a) - v * np.sin(a), centre[1] + u * np.sin(a) + v * np.cos(a)


def write(folder: Path, level: str = "L2A", product: str = "RFL") -> Path:
    """Write the reflectance granule (and, for L2A, its mask granule) into ``folder``; return the
    reflectance granule's path."""
    example = example_cube()
    side = example.values.shape[1] * 20.0
    centre = (example.transform.c + side / 2, example.transform.f - side / 2)
    shape = (int(side / STEP), int(side / STEP))
    xs, ys = _sensor_geometry(example.crs, centre, shape)
    cube = example.sample(example.at_wavelengths(WAVELENGTHS), xs, ys)  # (bands, downtrack, crosstrack)
    cube = np.where(np.isfinite(cube), cube, -9999.0).astype(np.float32)
    cube[BAD] = -0.01  # EMIT writes -0.01 where no reflectance is retrieved
    lons, lats = warp(example.crs, "EPSG:4326", xs.ravel().tolist(), ys.ravel().tolist())
    lons, lats = np.asarray(lons).reshape(shape), np.asarray(lats).reshape(shape)
    res = 0.00027  # degrees, about 30 m
    west, north = lons.min() - res, lats.max() + res
    width, height = int((lons.max() - west) / res) + 2, int((north - lats.min()) / res) + 2
    oy, ox = np.mgrid[0:height, 0:width]
    lon_out, lat_out = west + (ox + 0.5) * res, north - (oy + 0.5) * res
    ux, uy = warp("EPSG:4326", example.crs, lon_out.ravel().tolist(), lat_out.ravel().tolist())
    ux, uy = np.asarray(ux).reshape(height, width) - centre[0], np.asarray(uy).reshape(height, width) - centre[1]
    a = np.deg2rad(ROTATION_DEG)
    u, v = ux * np.cos(a) + uy * np.sin(a), -ux * np.sin(a) + uy * np.cos(a)
    col = np.round(u / STEP + shape[1] / 2).astype(int)
    row = np.round(shape[0] / 2 - v / STEP).astype(int)
    inside = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    glt_x, glt_y = np.where(inside, col + 1, 0).astype(np.int32), np.where(inside, row + 1, 0).astype(np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / GRANULE.format(level=level, product=product)
    attrs = {"geotransform": np.array([west, res, 0.0, north, 0.0, -res]), "spatial_ref": CRS.from_epsg(4326).to_wkt()}
    with h5py.File(path, "w") as f:
        f.create_dataset("reflectance" if product == "RFL" else "radiance", data=cube.transpose(1, 2, 0),
                         compression="gzip", fillvalue=np.float32(-9999.0))
        f["reflectance" if product == "RFL" else "radiance"].attrs["_FillValue"] = np.float32(-9999.0)
        _band_parameters(f.create_group("sensor_band_parameters"))
        location = f.create_group("location")
        location.create_dataset("glt_x", data=glt_x)
        location.create_dataset("glt_y", data=glt_y)
        location.create_dataset("lat", data=lats)
        location.create_dataset("lon", data=lons)
        f.attrs.update(attrs)
    if (level, product) == ("L2A", "RFL"):
        mask = np.zeros((*shape, len(MASK_BANDS)), dtype=np.float32)
        for name in ("Cloud flag", "Dilated Cloud Flag", "Aggregate Flag"):
            mask[(*CLOUD, MASK_BANDS.index(name))] = 1.0
        mask[:, :, MASK_BANDS.index("Water flag")][30:34, 30:34] = 1.0  # water: not left out
        with h5py.File(folder / GRANULE.format(level="L2A", product="MASK"), "w") as f:
            f.create_dataset("mask", data=mask, compression="gzip")
            f.create_group("sensor_band_parameters").create_dataset(
                "mask_bands", data=np.array(MASK_BANDS, dtype=h5py.string_dtype()))
            location = f.create_group("location")
            location.create_dataset("glt_x", data=glt_x)
            location.create_dataset("glt_y", data=glt_y)
            f.attrs.update(attrs)
    return path


def _band_parameters(group: h5py.Group) -> None:
    group.create_dataset("wavelengths", data=WAVELENGTHS.astype(np.float32))
    group.create_dataset("fwhm", data=np.full(len(WAVELENGTHS), 8.5, dtype=np.float32))
    group.create_dataset("good_wavelengths", data=(~BAD).astype(np.float32))
