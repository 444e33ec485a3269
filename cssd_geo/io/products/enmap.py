"""EnMAP Level 2A (surface reflectance) products, as DLR delivers them.

A product is a folder named like ``ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_...``
holding, with that name as prefix: ``-METADATA.XML``, ``-SPECTRAL_IMAGE.TIF`` (int16, 224 bands
VNIR then SWIR, nodata -32768; the water-vapour bands are delivered as nodata) and quality
layers ``-QL_QUALITY_CLOUD.TIF``, ``-QL_QUALITY_CLOUDSHADOW.TIF``, ``-QL_QUALITY_HAZE.TIF``,
``-QL_QUALITY_CIRRUS.TIF``, ``-QL_QUALITY_SNOW.TIF`` (1 = flagged). The metadata's
``specific/bandCharacterisation/bandID`` elements give each band's ``wavelengthCenterOfBand``,
``FWHMOfBand``, ``GainOfBand`` and ``OffsetOfBand`` (reflectance = stored x gain + offset).
Layout as in the EnMAP HSI Level 1B/1C/2A product specification (EN-PCV-ICD-2009-2). The
reader accepts the folder, its METADATA.XML or its SPECTRAL_IMAGE file. Other levels (L1B,
L1C: radiance) are refused by name.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ElementTree

import numpy as np
import xarray as xr

from ...errors import CssdError, first_line
from . import ProductReader

QUALITY_LAYERS = {"cloud": "QL_QUALITY_CLOUD", "cloud_shadow": "QL_QUALITY_CLOUDSHADOW", "haze": "QL_QUALITY_HAZE",
                  "cirrus": "QL_QUALITY_CIRRUS", "snow": "QL_QUALITY_SNOW"}
_NAME = re.compile(r"ENMAP01-_*(L\w{1,3}?)-", re.IGNORECASE)


def _product_folder(path: str) -> str | None:
    """The product folder of ``path`` (the folder itself, or the folder of one of its files)."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not _NAME.search(os.path.basename(os.path.normpath(path))):
        return None
    if os.path.isdir(folder) and any(f.upper().endswith("METADATA.XML") for f in os.listdir(folder)):
        return folder
    return None


def matches(path: str) -> bool:
    """An EnMAP product folder, its METADATA.XML or its SPECTRAL_IMAGE file."""
    folder = _product_folder(path)
    if folder is None:
        return False
    return os.path.isdir(path) or path.upper().endswith(("METADATA.XML", "SPECTRAL_IMAGE.TIF", "SPECTRAL_IMAGE.TIFF"))


def _member(folder: str, suffix: str) -> str | None:
    hits = [f for f in os.listdir(folder) if f.upper().endswith(suffix.upper()) and f.upper().startswith("ENMAP")]
    return os.path.join(folder, sorted(hits)[0]) if hits else None


def read(path: str, chunks: dict[str, int]) -> xr.DataArray:
    """The SPECTRAL_IMAGE of the product at ``path`` with the metadata's band characterisation
    and the quality layers as ``quality_<name>`` coordinates."""
    from ..scene import _open_gdal

    folder = _product_folder(path)
    assert folder is not None
    metadata = _member(folder, "METADATA.XML")
    assert metadata is not None
    level = _NAME.search(os.path.basename(metadata))
    level_name = level.group(1).upper() if level else "unknown level"
    if level_name != "L2A":
        raise CssdError(f"{path}: EnMAP {level_name} product (radiance); cssd-geo reads EnMAP L2A (surface "
                        "reflectance): order or process the L2A product")
    image = _member(folder, "SPECTRAL_IMAGE.TIF")
    if image is None:
        raise CssdError(f"{folder}: EnMAP L2A folder without its SPECTRAL_IMAGE.TIF; the product is incomplete: "
                        "download it again (cssd-geo reads the GeoTIFF delivery format)")
    try:
        root = ElementTree.parse(metadata).getroot()
    except ElementTree.ParseError as exc:
        raise CssdError(f"{metadata}: not readable XML ({first_line(exc)}); download the product again") from exc
    bands = root.findall("specific/bandCharacterisation/bandID")

    def values(tag: str) -> np.ndarray:
        return np.array([float(b.findtext(tag, "nan")) for b in bands])

    da = _open_gdal(image, chunks)
    if len(bands) != da.sizes["band"]:
        raise CssdError(f"{metadata}: describes {len(bands)} bands but {os.path.basename(image)} has "
                        f"{da.sizes['band']}; the product is inconsistent: download it again")
    da = da.drop_vars([c for c in ("scale", "offset", "bad_band") if c in da.coords])
    da = da.assign_coords(band_name=("band", [f"band {i + 1}" for i in range(len(bands))]),
                          wavelength=("band", values("wavelengthCenterOfBand")), fwhm=("band", values("FWHMOfBand")),
                          scale=("band", values("GainOfBand")), offset=("band", values("OffsetOfBand")))
    for name, suffix in QUALITY_LAYERS.items():
        layer = _member(folder, f"{suffix}.TIF")
        if layer is None:
            continue
        flags = _open_gdal(layer, chunks)
        if flags.sizes["y"] != da.sizes["y"] or flags.sizes["x"] != da.sizes["x"]:
            raise CssdError(f"{layer}: the quality layer is not on the spectral image's grid; the product is "
                            "inconsistent: download it again")
        da = da.assign_coords({f"quality_{name}": (("y", "x"), (flags.data[0] == 1))})
    da.attrs["product"] = "EnMAP L2A"
    return da


READER = ProductReader("EnMAP L2A", matches, read)
