"""A small PRISMA L2D product (HDF-EOS5 ``.he5``) in ASI's layout, and an L1 product to refuse.

Follows ASI's PRISMA Products Specification Document (Issue 2.3, 12/03/2020) as delivered L2D
files show it:

- file ``PRS_L2D_STD_<start>_<stop>_0001.he5`` (L1: ``PRS_L1_STD_OFFL_<start>_<stop>_0001.he5``);
- ``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube`` (66 band slots) and ``.../SWIR_Cube``
  (173 band slots): uint16, (rows, band slots, columns), gzip-compressed, rows north to south,
  slots in decreasing wavelength, DN 0 = fill; ``VNIR_PIXEL_L2_ERR_MATRIX`` and
  ``SWIR_PIXEL_L2_ERR_MATRIX`` beside them (uint8, same shape: 0 ok, 1 invalid in L1,
  2 negative, 4 saturated after the atmospheric correction);
  ``HDFEOS/SWATHS/PRS_L2D_HCO/Geolocation Fields/Latitude`` and ``Longitude`` (float32,
  rows x columns);
- root attributes ``Processing_Level`` ("2D"), ``Product_ID``, ``Product_StartTime``,
  ``Epsg_Code`` (int32), ``Projection_Name`` ("UTM"), ``Projection_Id`` (the zone),
  ``Product_{UL,UR,LL,LR}corner_{easting,northing}`` (the centres of the corner pixels of the
  30 m grid) and ``..._lat`` / ``..._long``, ``List_Cw_Vnir`` / ``List_Cw_Swir`` and
  ``List_Fwhm_Vnir`` / ``List_Fwhm_Swir`` (float32 nm, slot order, 0 = unused slot),
  ``List_Cw_Vnir_Flags`` / ``List_Cw_Swir_Flags`` (uint8, 1 = valid),
  ``L2ScaleVnirMin`` / ``Max`` and ``L2ScaleSwirMin`` / ``Max`` (float32; reflectance =
  min + DN x (max - min) / 65535).

Not written: the panchromatic swath ``PRS_L2D_PCO``, the ``Geometric Fields`` and the HDF-EOS
structure metadata (``HDFEOS INFORMATION``), which the reader does not use.

Band centres: a quintic in the slot index fitted to a delivered product's ``List_Cw`` (within
1.5 nm), 63 VNIR bands 402-973 nm and 171 SWIR bands 941-2497 nm, with 3 unused VNIR slots
(first in storage order) and 2 unused SWIR slots (last); FWHM quadratic fits (8-15 nm). One
SWIR band (:data:`INVALID_SWIR` slot) is flagged not valid. The grid: 30 m from the example
scene's upper-left corner (UTM 16N), values from it; rows :data:`FILL_ROWS` and pixels off the
example scene are fill (DN 0 in every band). L2D has no cloud mask (that comes with L1).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from . import example_cube, grid_30m

NAMES = {"L1": "PRS_L1_STD_OFFL_20230812165036_20230812165040_0001.he5",
         "L2B": "PRS_L2B_STD_20230812165036_20230812165040_0001.he5",
         "L2C": "PRS_L2C_STD_20230812165036_20230812165040_0001.he5",
         "L2D": "PRS_L2D_STD_20230812165036_20230812165040_0001.he5"}
SWATH = "HDFEOS/SWATHS/PRS_{level}_HCO"
PIXEL = 30.0
SLOTS = {"Vnir": 66, "Swir": 173}
UNUSED = {"Vnir": slice(0, 3), "Swir": slice(171, 173)}  # slots with centre 0, in storage order
_CW_FIT = {"Vnir": ([333.35, -1103.07, 1232.19, -394.56, 501.55, 403.2], 63),  # ascending, by slot fraction
           "Swir": ([-1251.88, 3920.1, -4545.91, 1890.19, 1542.0, 941.46], 171)}
_FWHM_FIT = {"Vnir": [-0.18, 5.02, 8.9], "Swir": [-6.17, 0.63, 13.82]}
SCALE = {"Vnir": (0.0, 0.8), "Swir": (0.001, 0.65)}  # L2Scale<det>Min, L2Scale<det>Max
INVALID_SWIR = 150  # a slot (0-based, storage order) of SWIR_Cube flagged not valid
FILL_ROWS = slice(40, 43)  # DN 0 (fill) in every band


def centres(detector: str) -> np.ndarray:
    """``List_Cw_<detector>``: band centres (nm) in storage order (decreasing), 0 for unused slots."""
    coefficients, used = _CW_FIT[detector]
    ascending = np.round(np.polyval(coefficients, np.linspace(0, 1, used)), 2)
    out = np.zeros(SLOTS[detector])
    out[~_mask(detector)] = ascending[::-1]
    return out


def widths(detector: str) -> np.ndarray:
    """``List_Fwhm_<detector>`` (nm) in storage order, 0 for unused slots."""
    used = ~_mask(detector)
    out = np.zeros(SLOTS[detector])
    out[used] = np.round(np.polyval(_FWHM_FIT[detector], np.linspace(0, 1, used.sum())), 2)[::-1]
    return out


def flags(detector: str) -> np.ndarray:
    """``List_Cw_<detector>_Flags``: 1 = valid band."""
    out = (~_mask(detector)).astype(np.uint8)
    if detector == "Swir":
        out[INVALID_SWIR] = 0
    return out


def _mask(detector: str) -> np.ndarray:
    unused = np.zeros(SLOTS[detector], bool)
    unused[UNUSED[detector]] = True
    return unused


def cube_dn(detector: str) -> np.ndarray:
    """The uint16 cube as stored: (rows, band slots, columns)."""
    example = example_cube()
    transform, height, width = grid_30m()
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    cw = centres(detector)
    reflectance = example.sample(example.at_wavelengths(np.where(cw > 0, cw, 500.0)), xs, ys)
    low, high = SCALE[detector]
    dn = np.clip(np.round((reflectance - low) / (high - low) * 65535), 1, 65535)
    dn = np.where(np.isnan(reflectance), 0, dn).astype(np.uint16)
    dn[cw <= 0] = 0
    dn[:, FILL_ROWS, :] = 0
    return dn.transpose(1, 0, 2)


def write(folder: Path, level: str = "L2D") -> Path:
    """Write the .he5 file into ``folder``; return its path (what a user gives)."""
    from rasterio.warp import transform as warp

    example = example_cube()
    transform, height, width = grid_30m()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAMES[level]
    fields = f"{SWATH.format(level=level)}/Data Fields"
    geolocation = f"{SWATH.format(level=level)}/Geolocation Fields"
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    lon, lat = warp(example.crs, "EPSG:4326", xs.ravel().tolist(), ys.ravel().tolist())
    with h5py.File(path, "w") as f:
        for detector in ("Vnir", "Swir"):
            dn = cube_dn(detector)
            f.create_dataset(f"{fields}/{detector.upper()}_Cube", data=dn, compression="gzip",
                             chunks=(16, dn.shape[1], width))
            errors = np.zeros(dn.shape, dtype=np.uint8)
            errors[60:62, 5, 70:72] = 2  # negative after the atmospheric correction, in one band
            f.create_dataset(f"{fields}/{detector.upper()}_PIXEL_L2_ERR_MATRIX", data=errors, compression="gzip")
            low, high = SCALE[detector]
            f.attrs[f"List_Cw_{detector}"] = centres(detector).astype(np.float32)
            f.attrs[f"List_Fwhm_{detector}"] = widths(detector).astype(np.float32)
            f.attrs[f"List_Cw_{detector}_Flags"] = flags(detector)
            f.attrs[f"L2Scale{detector}Min"] = np.float32(low)
            f.attrs[f"L2Scale{detector}Max"] = np.float32(high)
        f.create_dataset(f"{geolocation}/Latitude", data=np.reshape(lat, (height, width)).astype(np.float32))
        f.create_dataset(f"{geolocation}/Longitude", data=np.reshape(lon, (height, width)).astype(np.float32))
        f.attrs["Processing_Level"] = np.bytes_(level[1:])
        f.attrs["Product_ID"] = np.bytes_(f"PRS_{level}_STD")
        f.attrs["Product_StartTime"] = np.bytes_("2023-08-12T16:50:36.000000")
        epsg = int(example.crs.to_epsg())
        f.attrs["Epsg_Code"] = np.int32(epsg)
        f.attrs["Projection_Name"] = np.bytes_("UTM")
        f.attrs["Projection_Id"] = np.bytes_(str(epsg % 100))
        first = transform * (0.5, 0.5)  # centre of the upper-left pixel
        last = transform * (width - 0.5, height - 0.5)  # ... and of the lower-right one
        corners = {"UL": (first[0], first[1]), "UR": (last[0], first[1]), "LL": (first[0], last[1]),
                   "LR": (last[0], last[1])}
        for corner, (x, y) in corners.items():
            f.attrs[f"Product_{corner}corner_easting"] = np.float64(x)
            f.attrs[f"Product_{corner}corner_northing"] = np.float64(y)
            (clon,), (clat,) = warp(example.crs, "EPSG:4326", [x], [y])
            f.attrs[f"Product_{corner}corner_lat"] = np.float64(clat)
            f.attrs[f"Product_{corner}corner_long"] = np.float64(clon)
    return path


def write_l1(folder: Path) -> Path:
    """Write a (tiny) PRISMA L1 product: top-of-atmosphere radiance in sensor geometry."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAMES["L1"]
    fields = f"{SWATH.format(level='L1')}/Data Fields"
    with h5py.File(path, "w") as f:
        for detector in ("Vnir", "Swir"):
            f.create_dataset(f"{fields}/{detector.upper()}_Cube",
                             data=np.ones((8, SLOTS[detector], 8), dtype=np.uint16))
            f.attrs[f"List_Cw_{detector}"] = centres(detector).astype(np.float32)
        f.create_dataset(f"{fields}/Cloud_Mask", data=np.zeros((8, 8), dtype=np.uint8))
        f.attrs["Processing_Level"] = np.bytes_("1")
        f.attrs["ScaleFactor_Vnir"] = np.float32(100.0)
        f.attrs["Offset_Vnir"] = np.float32(0.0)
    return path
