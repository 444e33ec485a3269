"""A small EnMAP L2A product in the DLR delivery layout (GeoTIFF format).

Follows the EnMAP HSI Level 1B/1C/2A product specification (EN-PCV-ICD-2009-2): a folder named
``ENMAP01-____L2A-DT<datatake>_<start>_<tile>_V<version>_<processed>`` with ``-METADATA.XML``
(root ``level_X``; ``specific/bandCharacterisation/bandID[@number]`` with
``wavelengthCenterOfBand``, ``FWHMOfBand``, ``GainOfBand``, ``OffsetOfBand``;
``specific/numberOfVNIRBands``; ``product/image/merge/channels``), ``-SPECTRAL_IMAGE.TIF``
(int16, 224 bands, 91 VNIR then 133 SWIR, nodata -32768, the six water-vapour bands 130-135
nodata everywhere, reflectance x 10000) and the binary quality layers ``-QL_QUALITY_CLOUD``,
``-QL_QUALITY_CLOUDSHADOW``, ``-QL_QUALITY_HAZE`` (uint8, 1 = flagged). 30 m pixels laid over
the example scene (UTM 16N), values from it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from . import example_cube

PREFIX = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"
VNIR, SWIR = 91, 133
WAVELENGTHS = np.concatenate([np.linspace(418.4, 993.0, VNIR), np.linspace(902.5, 2445.5, SWIR)])
DEAD_BANDS = list(range(130, 136))  # 1-based
GAIN = 0.0001
NODATA = -32768
CLOUD = (slice(5, 9), slice(40, 46))  # rows, columns flagged in QL_QUALITY_CLOUD
GAP = (slice(46, 49), slice(None))  # a stripe of nodata between two valid areas


def write(folder: Path, level: str = "L2A") -> Path:
    """Write the product folder into ``folder``; return the folder (what a user gives)."""
    example = example_cube()
    transform = Affine(30.0, 0.0, example.transform.c, 0.0, -30.0, example.transform.f)
    side = int(example.values.shape[1] * 20 // 30)
    rows, cols = np.mgrid[0:side, 0:side]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    reflectance = example.sample(example.at_wavelengths(WAVELENGTHS), xs, ys)
    cube = np.round(reflectance * 10000).astype(np.int16)
    cube[np.asarray(DEAD_BANDS) - 1] = NODATA
    cube[(slice(None), *GAP)] = NODATA
    name = PREFIX.replace("L2A", level)
    product = folder / name
    product.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": side, "height": side, "crs": example.crs, "transform": transform,
               "compress": "deflate", "tiled": True}
    with rasterio.open(product / f"{name}-SPECTRAL_IMAGE.TIF", "w", count=len(WAVELENGTHS), dtype="int16",
                       nodata=NODATA, **profile) as ds:
        ds.write(cube)
    for layer, flagged in (("CLOUD", CLOUD), ("CLOUDSHADOW", (slice(20, 22), slice(10, 12))),
                           ("HAZE", (slice(0, 0), slice(0, 0)))):
        flags = np.zeros((side, side), dtype=np.uint8)
        flags[flagged] = 1
        with rasterio.open(product / f"{name}-QL_QUALITY_{layer}.TIF", "w", count=1, dtype="uint8", **profile) as ds:
            ds.write(flags, 1)
    _metadata(product / f"{name}-METADATA.XML", name)
    return product


def _metadata(path: Path, name: str) -> None:
    root = ElementTree.Element("level_X")
    specific = ElementTree.SubElement(root, "specific")
    ElementTree.SubElement(specific, "numberOfVNIRBands").text = str(VNIR)
    ElementTree.SubElement(specific, "numberOfSWIRBands").text = str(SWIR)
    characterisation = ElementTree.SubElement(specific, "bandCharacterisation")
    for i, w in enumerate(WAVELENGTHS):
        band = ElementTree.SubElement(characterisation, "bandID", number=str(i + 1))
        ElementTree.SubElement(band, "wavelengthCenterOfBand").text = f"{w:.3f}"
        ElementTree.SubElement(band, "FWHMOfBand").text = "7.500" if i < VNIR else "10.000"
        ElementTree.SubElement(band, "GainOfBand").text = f"{GAIN}"
        ElementTree.SubElement(band, "OffsetOfBand").text = "0"
    image = ElementTree.SubElement(ElementTree.SubElement(root, "product"), "image")
    merge = ElementTree.SubElement(image, "merge")
    ElementTree.SubElement(merge, "name").text = f"{name}-SPECTRAL_IMAGE.TIF"
    ElementTree.SubElement(merge, "channels").text = str(len(WAVELENGTHS))
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
