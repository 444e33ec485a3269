"""PRISMA Level 2D (geocoded surface reflectance) products: ``PRS_L2D_STD_<start>_<stop>_<n>.he5``.

The file is HDF5 (HDF-EOS5). The hyperspectral cubes are
``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube`` and ``.../SWIR_Cube``, uint16 stored
(rows, bands, columns), with their band centres and widths in the root attributes
``List_Cw_Vnir``/``List_Cw_Swir`` and ``List_Fwhm_Vnir``/``List_Fwhm_Swir`` (in the cubes' band
order, longest wavelength first) and per-band validity in ``List_Cw_Vnir_Flags`` /
``List_Cw_Swir_Flags`` (0 = not valid). Reflectance is
``L2ScaleVnirMin + DN * (L2ScaleVnirMax - L2ScaleVnirMin) / 65535`` (the same with Swir), so
each band gets scale ``(max - min) / 65535`` and offset ``min``; DN 0 is fill. The grid is the
product's map grid: ``Epsg_Code`` and the corner attributes ``Product_{UL,UR,LL,LR}corner_easting``
/ ``_northing`` bound it. Layout as in ASI's PRISMA Products Specification
Document.

The two cubes are joined in increasing wavelength. Where they overlap (about 920-1010 nm) the
rule is: VNIR bands below :data:`OVERLAP_CUT_NM`, SWIR bands from it on; the other detector's
bands there are left out, and so are unused band slots (centre 0); bands the flags call not
valid are kept and flagged ``bad_band`` (training drops them). L2D has no
quality layers (PRISMA's cloud mask comes with the L1 product, in sensor geometry): use
``--mask``. Other levels (L1: radiance; L2B, L2C: not geocoded) are refused by name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

from ...errors import CssdError, first_line
from . import ProductReader

SWATH = "HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields"
OVERLAP_CUT_NM = 950.0
DN_MAX = 65535
_NAME = re.compile(r"^PRS_(L\w+?)_", re.IGNORECASE)


def matches(path: str) -> bool:
    """A PRISMA product file (``PRS_<level>_..he5``), whatever its level."""
    return os.path.isfile(path) and path.lower().endswith(".he5") and bool(_NAME.match(os.path.basename(path)))


@dataclass
class _Detector:
    """One detector's cube (bands, rows, cols; lazy) and what the root attributes say of it."""

    cube: Any
    centres: np.ndarray
    widths: np.ndarray
    flags: np.ndarray
    low: float  # reflectance of DN 0 ...
    high: float  # ... and of DN 65535


def _detector(f: Any, name: str, chunks: dict[str, int]) -> _Detector:
    """Read one detector's cube (lazily) and attributes from the open file ``f``."""
    import dask.array as dsa

    title = name.capitalize()
    cube = f[f"{SWATH}/{name.upper()}_Cube"]
    centres = np.asarray(f.attrs[f"List_Cw_{title}"], dtype=float)
    widths = np.asarray(f.attrs[f"List_Fwhm_{title}"], dtype=float)
    flags_key = f"List_Cw_{title}_Flags"
    flags = np.asarray(f.attrs[flags_key]) if flags_key in f.attrs else (centres > 0).astype(int)
    lazy = dsa.from_array(cube, chunks=(chunks.get("y", 512), -1, chunks.get("x", 512)), lock=True)
    return _Detector(lazy.transpose(1, 0, 2), centres, widths, flags, float(f.attrs[f"L2Scale{title}Min"]),
                     float(f.attrs[f"L2Scale{title}Max"]))


def read(path: str, chunks: dict[str, int]) -> xr.DataArray:
    """The VNIR and SWIR cubes of a PRISMA L2D file joined in wavelength order, on its map grid."""
    import dask.array as dsa
    import h5py
    import rioxarray  # noqa: F401 (registers the .rio accessor)
    from rasterio.crs import CRS

    level = _NAME.match(os.path.basename(path))
    level_name = level.group(1).upper() if level else "unknown level"
    if level_name != "L2D":
        kind = "radiance" if level_name.startswith("L1") else "not geocoded"
        raise CssdError(f"{path}: PRISMA {level_name} product ({kind}); cssd-geo reads PRISMA L2D (geocoded surface "
                        "reflectance): order or process the L2D product")
    try:
        f = h5py.File(path, "r")  # kept open: the lazy cube reads from it
    except OSError as exc:
        raise CssdError(f"{path}: not a readable HDF5 file ({first_line(exc)}); download the product again") from exc
    required = [f"{SWATH}/{d}_Cube" for d in ("VNIR", "SWIR")] + ["Epsg_Code"] + \
        [f"Product_{c}corner_{a}" for c in ("UL", "UR", "LL", "LR") for a in ("easting", "northing")] + \
        [f"{key}{d}{end}" for d in ("Vnir", "Swir") for key, end in
         (("List_Cw_", ""), ("List_Fwhm_", ""), ("L2Scale", "Min"), ("L2Scale", "Max"))]
    missing = [name for name in required if name not in (f if "/" in name else f.attrs)]
    if missing:
        f.close()
        raise CssdError(f"{path}: PRISMA L2D file without {', '.join(missing)}; the product is incomplete: download "
                        "it again")
    try:
        parts = [_detector(f, name, chunks) for name in ("vnir", "swir")]
        epsg = int(f.attrs["Epsg_Code"])
        corners = {k: float(f.attrs[f"Product_{k}corner_easting"]) for k in ("UL", "UR", "LL", "LR")}
        north = max(float(f.attrs["Product_ULcorner_northing"]), float(f.attrs["Product_URcorner_northing"]))
    except KeyError as exc:
        f.close()
        raise CssdError(f"{path}: PRISMA L2D file without {first_line(exc)}; the product is incomplete: download "
                        "it again") from exc
    cubes, centres, widths, scales, offsets, bad = [], [], [], [], [], []
    for k, part in enumerate(parts):
        cw = part.centres
        order = np.flatnonzero((cw > 0) & ((cw < OVERLAP_CUT_NM) if k == 0 else (cw >= OVERLAP_CUT_NM)))
        cubes.append(part.cube[order])
        centres.append(cw[order])
        widths.append(part.widths[order])
        bad.append(part.flags[order] == 0)
        scales.append(np.full(order.size, (part.high - part.low) / DN_MAX))
        offsets.append(np.full(order.size, part.low))
    wavelengths = np.concatenate(centres)
    order = np.argsort(wavelengths, kind="stable")
    data = dsa.concatenate(cubes, axis=0)[order]
    height, width = data.shape[1:]
    west = min(corners["UL"], corners["LL"])
    east = max(corners["UR"], corners["LR"])
    pixel = (east - west) / width
    da = xr.DataArray(data, dims=("band", "y", "x"), name="scene",
                      coords={"band": np.arange(1, data.shape[0] + 1),
                              "y": north - pixel * (np.arange(height) + 0.5),
                              "x": west + pixel * (np.arange(width) + 0.5)})
    da = da.rio.write_crs(CRS.from_epsg(epsg)).rio.write_transform(Affine(pixel, 0.0, west, 0.0, -pixel, north))
    wl = wavelengths[order]
    da = da.assign_coords(band_name=("band", [f"{'VNIR' if w < OVERLAP_CUT_NM else 'SWIR'} {w:.2f} nm" for w in wl]),
                          wavelength=("band", wl),
                          fwhm=("band", np.concatenate(widths)[order]),
                          scale=("band", np.concatenate(scales)[order]),
                          offset=("band", np.concatenate(offsets)[order]),
                          bad_band=("band", np.concatenate(bad)[order]))
    da = da.rio.write_nodata(0, encoded=False)
    da.attrs["product"] = "PRISMA L2D"
    return da


READER = ProductReader("PRISMA L2D", matches, read)
