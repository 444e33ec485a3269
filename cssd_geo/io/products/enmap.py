"""EnMAP Level 2A (surface reflectance) products as DLR delivers them, in the GeoTIFF format.

Layout, as the EnMAP HSI Level 1B / Level 1C / Level 2A Product Specification
(DLR, EN-PCV-ICD-2009-2) defines it and delivered L2A products (processor V01.03-V01.05) show it:

- a folder named like the product, ``ENMAP01-____L2A-DT<datatake>_<start>Z_<tile>_V<version>_<processed>Z``,
  holding files named ``<product>-<part>``; GeoTIFF parts end in ``.TIF``, or ``_COG.TIF`` in
  the cloud-optimised delivery of DLR's geoservice;
- ``-SPECTRAL_IMAGE.TIF``: int16, 224 bands in increasing wavelength (91 VNIR and 133 SWIR
  channels, interleaved where the detectors overlap, 900-1000 nm), reflectance = stored value x
  gain + offset (gain 0.0001), nodata -32768; bands the atmospheric correction leaves out
  (the six at 1331-1390 nm in current products) hold nodata in every pixel;
- ``-METADATA.XML``, root ``level_X``: ``base/level`` (L1B, L1C, L2A);
  ``specific/bandCharacterisation/bandID[@number]`` with ``wavelengthCenterOfBand`` and
  ``FWHMOfBand`` (nm), ``GainOfBand`` and ``OffsetOfBand``; ``specific/backgroundValue`` (the
  nodata value); ``specific/vnirProductQuality/expectedChannelsList`` and
  ``specific/swirProductQuality/expectedChannelsList`` (which band comes from which detector);
- quality layers, uint8, one band, on the spectral image's grid: ``-QL_QUALITY_CLOUD``,
  ``-QL_QUALITY_CLOUDSHADOW``, ``-QL_QUALITY_HAZE``, ``-QL_QUALITY_SNOW`` (0 = clear,
  1 = flagged) and ``-QL_QUALITY_CIRRUS`` (0 = none, 1-3 = cirrus classes, 255 = fill).

The reader opens the spectral image lazily with values as stored, takes wavelength, FWHM and
gain/offset per band from the metadata and turns each quality layer present into a
``quality_<name>`` mask (True where the layer holds a value other than 0 and the fill 255).
Not used: ``-QL_PIXELMASK`` (the defective-detector mask: one band per spectral band, so not a
per-pixel mask), ``-QL_QUALITY_CLASSES`` (land / water / background: land cover, not quality)
and ``-QL_QUALITY_TESTFLAGS``. The user gives the folder, its METADATA.XML or its
SPECTRAL_IMAGE. Other levels (L1B, L1C: top-of-atmosphere radiance) are refused by name, and
so is a zipped product.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ElementTree

import dask.array as dsa
import numpy as np
import xarray as xr

from ...errors import CssdError, first_line
from . import QUALITY_PREFIX, ProductReader

LEVEL = "L2A"
DEFAULT_NODATA = -32768
QUALITY_LAYERS = {"cloud": "QL_QUALITY_CLOUD", "cloud_shadow": "QL_QUALITY_CLOUDSHADOW", "haze": "QL_QUALITY_HAZE",
                  "cirrus": "QL_QUALITY_CIRRUS", "snow": "QL_QUALITY_SNOW"}
QUALITY_FILL = 255  # the value some quality layers hold where they say nothing
LEVEL_KINDS = {"L1B": "radiance, not orthorectified", "L1C": "radiance"}
_PRODUCT = re.compile(r"^ENMAP\d\d-_*(L\d[A-Z]?)-", re.IGNORECASE)  # ENMAP01-____L2A-DT...
_RASTER_EXT = r"\.(?:TIF|TIFF|GEOTIFF|BSQ|BIL|BIP|JP2)$"
_SPECTRAL = re.compile(r"-SPECTRAL_IMAGE(?:_VNIR|_SWIR)?(?:_COG)?" + _RASTER_EXT, re.IGNORECASE)
_METADATA = re.compile(r"-METADATA\.XML$", re.IGNORECASE)


def _part(name: str) -> re.Pattern[str]:
    """The file name pattern of one raster part (``-<name>.TIF``, ``-<name>_COG.TIF``, ...)."""
    return re.compile("-" + name + r"(?:_COG)?" + _RASTER_EXT, re.IGNORECASE)


def _is_product_file(name: str) -> bool:
    return bool(_PRODUCT.match(name)) and bool(_METADATA.search(name) or _SPECTRAL.search(name))


def matches(path: str) -> bool:
    """An EnMAP product: its folder (named like a product, or holding product files), its
    METADATA.XML, one of its SPECTRAL_IMAGE files, or the product's ZIP archive; whatever its
    level. A product folder that lacks its metadata still matches, so that the reader can say so."""
    name = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        try:
            return bool(_PRODUCT.match(name)) or any(_is_product_file(f) for f in os.listdir(path))
        except OSError:
            return False
    return os.path.isfile(path) and bool(_PRODUCT.match(name)) and \
        (_is_product_file(name) or name.upper().endswith(".ZIP"))


def _level(name: str) -> str | None:
    found = _PRODUCT.match(name)
    return found.group(1).upper() if found else None


def _refuse_level(path: str, level: str) -> CssdError:
    kind = LEVEL_KINDS.get(level, "not surface reflectance")
    return CssdError(f"{path}: EnMAP {level} product ({kind}); cssd-geo reads EnMAP {LEVEL} (surface reflectance): "
                     f"order or process the {LEVEL} product")


def _find(folder: str, files: list[str], pattern: re.Pattern[str], prefix: str | None) -> str | None:
    """The product file in ``folder`` matching ``pattern`` (of the product ``prefix`` when several are there)."""
    hits = sorted(f for f in files if _PRODUCT.match(f) and pattern.search(f))
    if prefix is not None:
        hits = [f for f in hits if f.upper().startswith(prefix.upper() + "-")] or hits
    cog = [f for f in hits if "_COG." not in f.upper()]  # the plain GeoTIFF before its COG twin
    return os.path.join(folder, (cog or hits)[0]) if hits else None


def _number(band: ElementTree.Element, tag: str, metadata: str, default: float | None = None) -> float:
    text = band.findtext(tag)
    if text is None and default is not None:
        return default
    try:
        return float(str(text).strip())
    except ValueError:
        raise CssdError(f"{metadata}: band {band.get('number', '?')} has no valid {tag} ({text!r}); the metadata "
                        "is damaged: download the product again") from None


def read(path: str, chunks: dict[str, int]) -> xr.DataArray:
    """The SPECTRAL_IMAGE of the EnMAP L2A product at ``path`` with the metadata's band
    characterisation and the quality layers as ``quality_<name>`` coordinates."""
    from ..scene import _open_gdal

    name = os.path.basename(os.path.normpath(path))
    if os.path.isfile(path) and name.upper().endswith(".ZIP"):
        raise CssdError(f"{path}: a zipped EnMAP product; unzip it and give the product folder (or its "
                        "METADATA.XML)")
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    files = os.listdir(folder)
    prefix = None if os.path.isdir(path) else re.split(r"-(?:METADATA|SPECTRAL_IMAGE)", name, flags=re.I)[0]
    metadata = _find(folder, files, _METADATA, prefix)
    if metadata is None:
        raise CssdError(f"{path}: EnMAP product without its METADATA.XML; the product is incomplete: download it "
                        "again")
    level = _level(os.path.basename(metadata)) or _level(name)
    if level is not None and level != LEVEL:
        raise _refuse_level(path, level)
    try:
        root = ElementTree.parse(metadata).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise CssdError(f"{metadata}: not readable XML ({first_line(exc)}); download the product again") from exc
    stated = (root.findtext("base/level") or "").strip().upper()
    if stated and stated != LEVEL:
        raise _refuse_level(path, stated)
    bands = root.findall("specific/bandCharacterisation/bandID")
    if not bands:
        raise CssdError(f"{metadata}: no specific/bandCharacterisation/bandID elements; the metadata is damaged: "
                        "download the product again")
    if all((b.get("number") or "").isdigit() for b in bands):
        bands.sort(key=lambda b: int(b.get("number") or 0))
    image = _find(folder, files, _part("SPECTRAL_IMAGE"), prefix)
    if image is None:
        raise CssdError(f"{folder}: EnMAP L2A folder without its SPECTRAL_IMAGE.TIF; the product is incomplete: "
                        "download it again (cssd-geo reads the GeoTIFF delivery format)")
    da = _open_gdal(image, chunks)
    if len(bands) != da.sizes["band"]:
        raise CssdError(f"{metadata}: describes {len(bands)} bands but {os.path.basename(image)} has "
                        f"{da.sizes['band']}; the product is inconsistent: download it again")
    wavelengths = np.array([_number(b, "wavelengthCenterOfBand", metadata) for b in bands])
    da = da.drop_vars([c for c in ("band_name", "wavelength", "scale", "offset", "bad_band") if c in da.coords])
    da = da.assign_coords(
        band_name=("band", [f"band {b.get('number') or i + 1}" for i, b in enumerate(bands)]),
        wavelength=("band", wavelengths),
        fwhm=("band", np.array([_number(b, "FWHMOfBand", metadata, np.nan) for b in bands])),
        scale=("band", np.array([_number(b, "GainOfBand", metadata) for b in bands])),
        offset=("band", np.array([_number(b, "OffsetOfBand", metadata, 0.0) for b in bands])))
    if da.rio.nodata is None:
        background = (root.findtext("specific/backgroundValue") or "").strip()
        da = da.rio.write_nodata(_number_or(background, DEFAULT_NODATA), encoded=False)
    for layer, part in QUALITY_LAYERS.items():
        found = _find(folder, files, _part(part), prefix)
        if found is not None:
            da = da.assign_coords({QUALITY_PREFIX + layer: (("y", "x"), _flags(found, da, chunks))})
    da.attrs["product"] = f"EnMAP {LEVEL}"
    return da


def _number_or(text: str, default: float) -> float:
    """``text`` as a number, or ``default`` when it is not one."""
    try:
        return float(text)
    except ValueError:
        return default


def _flags(path: str, image: xr.DataArray, chunks: dict[str, int]) -> dsa.Array:
    """The quality layer at ``path`` as a lazy (y, x) bool array: True where it flags the pixel."""
    from ..scene import _open_gdal

    layer = _open_gdal(path, chunks)
    same_grid = layer.sizes["y"] == image.sizes["y"] and layer.sizes["x"] == image.sizes["x"] and \
        layer.rio.transform(recalc=False).almost_equals(image.rio.transform(recalc=False))
    if not same_grid:
        raise CssdError(f"{path}: the quality layer is not on the spectral image's grid; the product is "
                        "inconsistent: download it again")
    values = layer.data[0]
    return (values != 0) & (values != QUALITY_FILL)


READER = ProductReader(f"EnMAP {LEVEL}", matches, read)
