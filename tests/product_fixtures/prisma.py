"""A small PRISMA L2D product (HDF-EOS5 ``.he5``) in the ASI layout.

Follows the PRISMA Products Specification Document (ASI): file
``PRS_L2D_STD_<start>_<stop>_0001.he5``; cubes ``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube``
(66 bands) and ``.../SWIR_Cube`` (173 bands), uint16 stored (rows, bands, columns), longest
wavelength first, DN 0 = fill; root attributes ``List_Cw_Vnir``/``List_Cw_Swir`` (nm, 0 for unused
band slots), ``List_Fwhm_*``, ``List_Cw_*_Flags`` (1 = valid), ``L2ScaleVnirMin``/``Max`` and
``L2ScaleSwirMin``/``Max`` (reflectance = min + DN (max - min) / 65535), ``Epsg_Code``,
``Product_{UL,UR,LL,LR}corner_{easting,northing}`` (outer corners) and ``Processing_Level``.
30 m pixels laid over the example scene (UTM 16N), values from it.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from affine import Affine

from . import example_cube

NAME = "PRS_{level}_STD_20200627102358_20200627102402_0001.he5"
SWATH = "HDFEOS/SWATHS/PRS_{level}_HCO/Data Fields"
VNIR_CW = np.linspace(1010.0, 402.0, 66)  # longest wavelength first, as stored
VNIR_CW[-3:] = 0.0  # unused slots
SWIR_CW = np.linspace(2497.0, 920.0, 173)
SWIR_CW[:2] = 0.0
SCALE = {"Vnir": (0.0, 1.2), "Swir": (0.0, 0.9)}
INVALID_SWIR = 100  # an index in SWIR_CW flagged not valid
FILL_ROWS = slice(40, 43)  # DN 0 (fill) in every band


def write(folder: Path, level: str = "L2D") -> Path:
    """Write the .he5 file into ``folder``; return its path."""
    example = example_cube()
    side = int(example.values.shape[1] * 20 // 30)
    transform = Affine(30.0, 0.0, example.transform.c, 0.0, -30.0, example.transform.f)
    rows, cols = np.mgrid[0:side, 0:side]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    path = folder / NAME.format(level=level)
    folder.mkdir(parents=True, exist_ok=True)
    swath = SWATH.format(level=level)
    with h5py.File(path, "w") as f:
        for title, centres in (("Vnir", VNIR_CW), ("Swir", SWIR_CW)):
            low, high = SCALE[title]
            reflectance = example.sample(example.at_wavelengths(np.where(centres > 0, centres, 500.0)), xs, ys)
            dn = np.clip(np.round((reflectance - low) / (high - low) * 65535), 1, 65535).astype(np.uint16)
            dn[centres <= 0] = 0
            dn[:, FILL_ROWS, :] = 0
            f.create_dataset(f"{swath}/{title.upper()}_Cube", data=dn.transpose(1, 0, 2), compression="gzip")
            flags = (centres > 0).astype(np.uint8)
            if title == "Swir":
                flags[INVALID_SWIR] = 0
            f.attrs[f"List_Cw_{title}"] = centres.astype(np.float32)
            f.attrs[f"List_Fwhm_{title}"] = np.where(centres > 0, 10.0, 0.0).astype(np.float32)
            f.attrs[f"List_Cw_{title}_Flags"] = flags
            f.attrs[f"L2Scale{title}Min"] = np.float32(low)
            f.attrs[f"L2Scale{title}Max"] = np.float32(high)
        f.attrs["Epsg_Code"] = np.int32(example.crs.to_epsg())
        f.attrs["Processing_Level"] = level[1:]
        west, north = transform.c, transform.f
        east, south = west + 30.0 * side, north - 30.0 * side
        for corner, (x, y) in {"UL": (west, north), "UR": (east, north), "LL": (west, south),
                               "LR": (east, south)}.items():
            f.attrs[f"Product_{corner}corner_easting"] = np.float32(x)
            f.attrs[f"Product_{corner}corner_northing"] = np.float32(y)
    return path
