"""EMIT Level 2A surface reflectance granules: ``EMIT_L2A_RFL_001_<time>_<orbit>_<scene>.nc``.

The granule is NetCDF4 (HDF5). ``reflectance`` is float32 in sensor geometry (downtrack,
crosstrack, bands), fill -9999. ``sensor_band_parameters/wavelengths``, ``fwhm`` and
``good_wavelengths`` (0 in the water-vapour bands, where no reflectance is retrieved) describe
the bands. ``location/glt_x`` and ``glt_y`` are the geometry lookup table: for every pixel of
a north-up output grid, the 1-based crosstrack and downtrack index of the sensor pixel it
shows (0: none; the sign only marks filled-in pixels, so its absolute value is used). The
output grid is the root attributes ``geotransform`` (GDAL order) and ``spatial_ref`` (WKT,
geographic WGS 84). Layout as in the EMIT Level 2A product user guide (EMIT L2A RFL, V001).

Orthorectification is lazy: each output chunk reads its GLT block, then only the sensor
rows and columns that block points at. When the companion mask granule
``EMIT_L2A_MASK_...nc`` (variable ``mask``, layers named in
``sensor_band_parameters/mask_bands``) sits beside it, its ``Cloud flag``, ``Cirrus flag`` and
``Dilated Cloud Flag`` become quality layers through the same GLT. The ``Aggregate Flag`` is
not used: it also flags water, which is land cover to map. Other products (L1B radiance, the
L2A mask or uncertainty granule itself) are refused by name.
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import xarray as xr

from ...errors import CssdError, first_line
from . import ProductReader

FILL = -9999.0
MASK_LAYERS = {"cloud": "Cloud flag", "cirrus": "Cirrus flag", "dilated_cloud": "Dilated Cloud Flag"}
_NAME = re.compile(r"^EMIT_(L\w+?)_([A-Z]+)_", re.IGNORECASE)


def matches(path: str) -> bool:
    """An EMIT granule (``EMIT_<level>_<product>_...nc``), whatever its level."""
    return os.path.isfile(path) and path.lower().endswith(".nc") and bool(_NAME.match(os.path.basename(path)))


def _orthorectify(path: str, variable: str, layers: list[int] | None, glt_x: Any, glt_y: Any,
                  bands: int) -> Any:
    """(bands, y, x) lazy dask array of ``variable`` in ``path`` put on the GLT grid; ``layers``
    picks bands of the variable (None: all). Fill where the GLT has no source."""
    import dask.array as dsa

    def block(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        import h5py

        cols, rows = np.abs(gx.astype(np.int64)) - 1, np.abs(gy.astype(np.int64)) - 1
        has = (cols >= 0) & (rows >= 0)
        out = np.full((bands, *gx.shape), FILL, dtype=np.float32)
        if not has.any():
            return out
        r0, r1, c0, c1 = rows[has].min(), rows[has].max() + 1, cols[has].min(), cols[has].max() + 1
        with h5py.File(path, "r") as f:
            window = f[variable][r0:r1, c0:c1, :]  # only the sensor pixels this block shows
        if layers is not None:
            window = window[:, :, layers]
        out[:, has] = window[rows[has] - r0, cols[has] - c0].T
        return out

    return dsa.map_blocks(block, glt_x, glt_y, new_axis=0, chunks=((bands,), *glt_x.chunks), dtype=np.float32,
                          meta=np.empty((0, 0, 0), dtype=np.float32))


def read(path: str, chunks: dict[str, int]) -> xr.DataArray:
    """The reflectance of an EMIT L2A granule on its GLT grid, with the mask granule's cloud layers."""
    import dask.array as dsa
    import h5py
    import rioxarray  # noqa: F401 (registers the .rio accessor)
    from affine import Affine
    from rasterio.crs import CRS

    name = _NAME.match(os.path.basename(path))
    level, product = (name.group(1).upper(), name.group(2).upper()) if name else ("unknown", "unknown")
    if (level, product) != ("L2A", "RFL"):
        kind = "radiance granule" if level == "L1B" else f"{product} granule"
        raise CssdError(f"{path}: EMIT {level} {kind}; cssd-geo reads EMIT L2A surface reflectance (EMIT_L2A_RFL): "
                        "use the L2A reflectance granule")
    try:
        with h5py.File(path, "r") as f:
            missing = [v for v in ("reflectance", "sensor_band_parameters/wavelengths", "location/glt_x",
                                   "location/glt_y") if v not in f] + \
                [a for a in ("geotransform", "spatial_ref") if a not in f.attrs]
            if missing:
                raise CssdError(f"{path}: EMIT L2A granule without {', '.join(missing)}; the granule is incomplete: "
                                "download it again")
            bands = f["reflectance"].shape[2]
            params = f["sensor_band_parameters"]
            wavelengths = np.asarray(params["wavelengths"][:], dtype=float)
            fwhm = np.asarray(params["fwhm"][:], dtype=float) if "fwhm" in params else None
            good = np.asarray(params["good_wavelengths"][:]) if "good_wavelengths" in params else None
            gt = [float(v) for v in f.attrs["geotransform"]]
            wkt = f.attrs["spatial_ref"]
            glt_x = np.asarray(f["location/glt_x"][:])
            glt_y = np.asarray(f["location/glt_y"][:])
    except OSError as exc:
        raise CssdError(f"{path}: not a readable NetCDF4/HDF5 file ({first_line(exc)}); download the granule "
                        "again") from exc
    spatial = (chunks.get("y", 512), chunks.get("x", 512))
    gx, gy = dsa.from_array(glt_x, chunks=spatial), dsa.from_array(glt_y, chunks=spatial)
    data = _orthorectify(path, "reflectance", None, gx, gy, bands)
    transform = Affine.from_gdal(*gt)
    height, width = glt_x.shape
    da = xr.DataArray(data, dims=("band", "y", "x"), name="scene",
                      coords={"band": np.arange(1, bands + 1),
                              "y": gt[3] + gt[5] * (np.arange(height) + 0.5),
                              "x": gt[0] + gt[1] * (np.arange(width) + 0.5)})
    da = da.rio.write_crs(CRS.from_wkt(wkt.decode() if isinstance(wkt, bytes) else str(wkt)))
    da = da.rio.write_transform(transform)
    da = da.assign_coords(band_name=("band", [f"{w:.2f} nm" for w in wavelengths]), wavelength=("band", wavelengths))
    if fwhm is not None:
        da = da.assign_coords(fwhm=("band", fwhm))
    if good is not None:
        da = da.assign_coords(bad_band=("band", good == 0))
    for layer, values in _mask_layers(path, gx, gy).items():
        da = da.assign_coords({f"quality_{layer}": (("y", "x"), values)})
    da = da.rio.write_nodata(FILL, encoded=False)
    da.attrs["product"] = "EMIT L2A"
    return da


def _mask_layers(path: str, gx: Any, gy: Any) -> dict[str, Any]:
    """The cloud layers of the mask granule beside ``path`` (if there is one), on the GLT grid."""
    import h5py

    folder, base = os.path.split(path)
    mask_path = os.path.join(folder, base.replace("_L2A_RFL_", "_L2A_MASK_", 1))
    if not os.path.exists(mask_path):
        return {}
    try:
        with h5py.File(mask_path, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["sensor_band_parameters/mask_bands"][:]]
    except (OSError, KeyError) as exc:
        raise CssdError(f"{mask_path}: not a readable EMIT mask granule ({first_line(exc)}); download it again, or "
                        "move it away to map without EMIT's cloud flags") from exc
    layers = {}
    for layer, wanted in MASK_LAYERS.items():
        if wanted in names:
            values = _orthorectify(mask_path, "mask", [names.index(wanted)], gx, gy, 1)[0]
            layers[layer] = values > 0.5
    return layers


READER = ProductReader("EMIT L2A", matches, read)
