"""A small EnMAP L2A product in DLR's GeoTIFF delivery layout, and an L1B product to refuse.

Follows the EnMAP HSI Level 1B / Level 1C / Level 2A Product Specification (DLR,
EN-PCV-ICD-2009-2) as delivered L2A products (processor V01.04) show it:

- a folder ``ENMAP01-____L2A-DT<datatake>_<start>Z_<tile>_V<version>_<processed>Z`` whose files
  carry that name as prefix (``_COG`` before the extension in the cloud-optimised delivery);
- ``-SPECTRAL_IMAGE.TIF``: int16, 224 bands in increasing wavelength, nodata -32768, reflectance
  x 10000 (gain 0.0001, offset 0); the six bands 130-135 (1331-1390 nm, the edge of the 1.4 um
  water-vapour absorption) hold nodata in every pixel, as in current products; no wavelength
  tags in the GeoTIFF (they are in the metadata only);
- ``-METADATA.XML``, root ``level_X``: ``metadata/schema/processingLevel``, ``base/format``
  (``ENMAP_L2A``), ``base/level``; ``specific/numberOfVNIRBands`` (91) and
  ``numberOfSWIRBands`` (133), ``widthOfScene``, ``heightOfScene``, ``backgroundValue``
  (-32768), ``vnirProductQuality/expectedChannelsList`` and ``swirProductQuality/...`` (which
  bands each detector gives), ``bandCharacterisation/bandID[@number]`` with
  ``wavelengthCenterOfBand``, ``FWHMOfBand``, ``GainOfBand``, ``OffsetOfBand``;
  ``product/image/merge`` (``channels``, ``name``, ``dimension/columns``, ``rows``),
  ``product/ortho`` (``projection``, ``resolution``), ``product/bandStatistics/bandID``
  (``wavelength``, ``mean``, ``stdDeviation``);
- quality layers, uint8, one band: ``-QL_QUALITY_CLOUD``, ``-QL_QUALITY_CLOUDSHADOW``,
  ``-QL_QUALITY_HAZE``, ``-QL_QUALITY_SNOW`` (0 clear, 1 flagged), ``-QL_QUALITY_CIRRUS``
  (0 none, 1-3 cirrus classes, 255 fill); ``-QL_PIXELMASK`` (the defective-pixel mask, one band
  per spectral band, 0/1).

Band centres and FWHM are those of a delivered V01.04 product (DLR's STAC listing of its
``eo:bands``). The product lies over the example scene on a 30 m grid from its upper-left
corner (UTM 16N), values from it (97 x 97 pixels: the last row and column reach 10 m past
the example scene); a stripe of rows :data:`GAP` is nodata between two valid areas. Quality layers flag
:data:`CLOUD`, :data:`CLOUD_SHADOW`, :data:`HAZE` and :data:`CIRRUS` (cirrus of value
:data:`CIRRUS_VALUE`); the snow layer flags nothing. :func:`write_l1b` writes an L1B product
(VNIR and SWIR images apart, radiance), which cssd-geo refuses.
"""
from __future__ import annotations

import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from . import example_cube, grid_30m

PRODUCT = "ENMAP01-____{level}-DT0000041275_20230812T165036Z_004_V010402_20230816T094512Z"
PIXEL = 30.0
GAIN = 0.0001
NODATA = -32768
WAVELENGTHS = np.array([
    418.416, 424.043, 429.457, 434.686, 439.757, 444.699, 449.539, 454.306, 459.031, 463.73, 468.411, 473.08,
    477.744, 482.411, 487.087, 491.78, 496.497, 501.243, 506.02, 510.828, 515.672, 520.55, 525.467, 530.424,
    535.422, 540.463, 545.551, 550.687, 555.873, 561.112, 566.405, 571.756, 577.166, 582.636, 588.171, 593.773,
    599.446, 605.193, 611.017, 616.923, 622.92, 628.987, 635.112, 641.294, 647.537, 653.841, 660.207, 666.637,
    673.131, 679.691, 686.319, 693.014, 699.78, 706.617, 713.524, 720.501, 727.545, 734.654, 741.826, 749.06,
    756.353, 763.703, 771.108, 778.567, 786.078, 793.639, 801.248, 808.905, 816.608, 824.355, 832.145, 839.976,
    847.847, 855.757, 863.703, 871.683, 879.692, 887.729, 895.789, 901.962, 903.87, 911.572, 911.968, 920.08,
    921.32, 928.204, 931.204, 936.335, 941.218, 944.47, 951.361, 952.608, 960.748, 961.629, 968.891, 972.017,
    977.037, 982.524, 985.186, 993.145, 993.338, 1003.88, 1014.72, 1025.66, 1036.7, 1047.84, 1059.07, 1070.39,
    1081.79, 1093.26, 1104.81, 1116.43, 1128.11, 1139.84, 1151.62, 1163.44, 1175.31, 1187.2, 1199.11, 1211.05,
    1223.0, 1234.97, 1246.95, 1258.93, 1270.92, 1282.92, 1294.91, 1306.9, 1318.88, 1330.86, 1342.82, 1354.76,
    1366.69, 1378.6, 1390.48, 1461.11, 1472.74, 1484.34, 1495.89, 1507.4, 1518.87, 1530.29, 1541.68, 1553.01,
    1564.31, 1575.55, 1586.76, 1597.91, 1609.02, 1620.09, 1631.11, 1642.08, 1653.0, 1663.87, 1674.7, 1685.47,
    1696.2, 1706.87, 1717.5, 1728.08, 1738.6, 1749.08, 1759.51, 1939.14, 1948.69, 1958.2, 1967.66, 1977.08,
    1986.45, 1995.79, 2005.08, 2014.33, 2023.54, 2032.71, 2041.83, 2050.92, 2059.96, 2068.97, 2077.93, 2086.86,
    2095.74, 2104.59, 2113.4, 2122.17, 2130.9, 2139.6, 2148.26, 2156.88, 2165.47, 2174.02, 2182.53, 2191.01,
    2199.46, 2207.86, 2216.24, 2224.58, 2232.89, 2241.16, 2249.4, 2257.61, 2265.79, 2273.93, 2282.04, 2290.12,
    2298.17, 2306.19, 2314.18, 2322.13, 2330.05, 2337.94, 2345.81, 2353.64, 2361.44, 2369.21, 2376.95, 2384.66,
    2392.34, 2400.0, 2407.62, 2415.21, 2422.78, 2430.32, 2437.83, 2445.3])
FWHM = np.array([
    6.99561, 6.6675, 6.42408, 6.25124, 6.13485, 6.06076, 6.01486, 5.98302, 5.95232, 5.9199, 5.88775, 5.8579,
    5.83239, 5.81325, 5.8025, 5.8022, 5.81407, 5.83751, 5.87076, 5.91208, 5.95969, 6.01183, 6.06674, 6.12279,
    6.1794, 6.23648, 6.29397, 6.35179, 6.40987, 6.46815, 6.52654, 6.58497, 6.64338, 6.70177, 6.76072, 6.82113,
    6.88388, 6.94987, 7.01999, 7.09511, 7.17533, 7.25495, 7.33145, 7.40537, 7.47729, 7.54777, 7.61738, 7.68669,
    7.75628, 7.8267, 7.89853, 7.97235, 8.04871, 8.1281, 8.2102, 8.29433, 8.3798, 8.46592, 8.552, 8.63735, 8.72128,
    8.80311, 8.88214, 8.95779, 9.03034, 9.1005, 9.16897, 9.23646, 9.30368, 9.37133, 9.44012, 9.51076, 9.58396,
    9.66032, 9.73971, 9.82161, 9.90551, 9.99089, 10.0772, 9.17725, 10.164, 9.31901, 10.2508, 10.3369, 9.45441,
    10.422, 9.58399, 10.5054, 9.7083, 10.5862, 9.82789, 10.6589, 10.716, 9.94331, 10.75, 10.0551, 10.7533, 10.1638,
    10.7183, 10.27, 10.6375, 10.3742, 10.4768, 10.5775, 10.6753, 10.769, 10.8578, 10.9405, 11.0162, 11.0839,
    11.1437, 11.196, 11.2414, 11.2806, 11.3139, 11.3421, 11.3656, 11.385, 11.4009, 11.4135, 11.4229, 11.4292,
    11.4325, 11.4329, 11.4305, 11.4253, 11.4176, 11.4073, 11.3946, 11.3796, 11.3624, 11.343, 11.3215, 11.2981,
    11.2728, 11.0876, 11.052, 11.0151, 10.9772, 10.9383, 10.8984, 10.8577, 10.8161, 10.7738, 10.7308, 10.6872,
    10.643, 10.5985, 10.5535, 10.5082, 10.4626, 10.4169, 10.371, 10.3251, 10.2793, 10.2335, 10.1879, 10.1425,
    10.0974, 10.0525, 10.0079, 9.96359, 9.91949, 9.16572, 9.12592, 9.08633, 9.04694, 9.00775, 8.96875, 8.92995,
    8.89134, 8.85292, 8.81469, 8.77665, 8.73878, 8.70111, 8.66361, 8.62632, 8.58923, 8.55236, 8.51572, 8.47932,
    8.44317, 8.40728, 8.37166, 8.33632, 8.30128, 8.26653, 8.2321, 8.198, 8.16422, 8.13079, 8.09771, 8.065,
    8.03267, 8.00072, 7.96916, 7.93802, 7.90728, 7.87694, 7.84695, 7.81727, 7.78785, 7.75866, 7.72966, 7.70079,
    7.67203, 7.64333, 7.61464, 7.58593, 7.55715, 7.52827, 7.49924, 7.47001, 7.44055, 7.41082, 7.38077, 7.35037,
    7.31957, 7.28832, 7.25659, 7.22434, 7.19152, 7.1581])
# the bands the SWIR detector gives (1-based); the others are VNIR's
SWIR_BANDS = [80, 82, 85, 87, 89, 91, 94, 96, 98, 100, *range(102, 225)]
VNIR_BANDS = [b for b in range(1, 225) if b not in SWIR_BANDS]
DEAD_BANDS = list(range(130, 136))  # 1-based: nodata in every pixel
GAP = (slice(46, 49), slice(None))  # rows of nodata between two valid areas
CLOUD = (slice(5, 9), slice(40, 46))
CLOUD_SHADOW = (slice(20, 22), slice(10, 12))
HAZE = (slice(70, 72), slice(80, 83))
CIRRUS = (slice(30, 32), slice(60, 62))
CIRRUS_VALUE = 2  # a cirrus class (1-3)
DEFECTIVE = (150, slice(None), 33)  # a defective SWIR detector column (band 150) in QL_PIXELMASK


def spectral_image() -> np.ndarray:
    """The int16 (224, height, width) cube the product stores."""
    example = example_cube()
    transform, height, width = grid_30m()
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    reflectance = example.sample(example.at_wavelengths(WAVELENGTHS), xs, ys)
    cube = np.where(np.isnan(reflectance), NODATA, np.round(reflectance / GAIN)).astype(np.int16)
    cube[np.asarray(DEAD_BANDS) - 1] = NODATA
    cube[(slice(None), *GAP)] = NODATA
    return cube


def write(folder: Path, level: str = "L2A", cog: bool = False) -> Path:
    """Write the product folder into ``folder``; return the folder (what a user gives).
    ``cog``: name the rasters as the cloud-optimised delivery does (``-SPECTRAL_IMAGE_COG.TIF``)."""
    name = PRODUCT.format(level=level)
    product = folder / name
    product.mkdir(parents=True, exist_ok=True)
    transform, height, width = grid_30m()
    cube = spectral_image()
    ext = "_COG.TIF" if cog else ".TIF"
    profile = {"driver": "GTiff", "width": width, "height": height, "crs": example_cube().crs,
               "transform": transform, "compress": "deflate", "tiled": True, "blockxsize": 64, "blockysize": 64}
    with rasterio.open(product / f"{name}-SPECTRAL_IMAGE{ext}", "w", count=cube.shape[0], dtype="int16",
                       nodata=NODATA, predictor=2, **profile) as ds:
        ds.write(cube)
    for part, flagged, value in (("CLOUD", CLOUD, 1), ("CLOUDSHADOW", CLOUD_SHADOW, 1), ("HAZE", HAZE, 1),
                                 ("CIRRUS", CIRRUS, CIRRUS_VALUE), ("SNOW", None, 1)):
        flags = np.zeros((height, width), dtype=np.uint8)
        if flagged is not None:
            flags[flagged] = value
        with rasterio.open(product / f"{name}-QL_QUALITY_{part}{ext}", "w", count=1, dtype="uint8", **profile) as ds:
            ds.write(flags, 1)
    defective = np.zeros(cube.shape, dtype=np.uint8)
    defective[DEFECTIVE[0] - 1, DEFECTIVE[1], DEFECTIVE[2]] = 1
    with rasterio.open(product / f"{name}-QL_PIXELMASK{ext}", "w", count=cube.shape[0], dtype="uint8",
                       **profile) as ds:
        ds.write(defective)
    _metadata(product / f"{name}-METADATA.XML", name, level, cube, width, height, ext)
    return product


def _sub(parent: ElementTree.Element, tag: str, text: object = None, **attrib: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = str(text)
    return element


def _metadata(path: Path, name: str, level: str, cube: np.ndarray, width: int, height: int, ext: str) -> None:
    root = ElementTree.Element("level_X")
    meta = _sub(root, "metadata")
    _sub(_sub(meta, "schema"), "processingLevel", level)
    _sub(meta, "name", path.name)
    base = _sub(root, "base")
    _sub(base, "format", f"ENMAP_{level}")
    _sub(base, "level", level)
    coverage = _sub(base, "temporalCoverage")
    _sub(coverage, "startTime", "2023-08-12T16:50:36.000000Z")
    _sub(coverage, "stopTime", "2023-08-12T16:50:40.000000Z")
    specific = _sub(root, "specific")
    _sub(specific, "code", level)
    _sub(specific, "numberOfVNIRBands", len(VNIR_BANDS))
    _sub(specific, "numberOfSWIRBands", len(SWIR_BANDS))
    _sub(specific, "widthOfScene", width)
    _sub(specific, "heightOfScene", height)
    _sub(specific, "backgroundValue", NODATA)
    _sub(_sub(specific, "vnirProductQuality"), "expectedChannelsList", ",".join(map(str, VNIR_BANDS)))
    _sub(_sub(specific, "swirProductQuality"), "expectedChannelsList", ",".join(map(str, SWIR_BANDS)))
    characterisation = _sub(specific, "bandCharacterisation")
    for i, (w, f) in enumerate(zip(WAVELENGTHS, FWHM, strict=True)):
        band = _sub(characterisation, "bandID", number=str(i + 1))
        _sub(band, "wavelengthCenterOfBand", f"{w:g}")
        _sub(band, "FWHMOfBand", f"{f:g}")
        _sub(band, "GainOfBand", f"{GAIN:g}")
        _sub(band, "OffsetOfBand", "0")
    product = _sub(root, "product")
    merge = _sub(_sub(product, "image"), "merge")
    _sub(merge, "channels", cube.shape[0])
    _sub(merge, "name", f"{name}-SPECTRAL_IMAGE{ext}")
    dimension = _sub(merge, "dimension")
    _sub(dimension, "columns", width)
    _sub(dimension, "rows", height)
    ortho = _sub(product, "ortho")
    _sub(ortho, "projection", "UTM_Zone16_North")
    _sub(ortho, "resolution", f"{PIXEL:g}")
    statistics = _sub(product, "bandStatistics")
    for i, band in enumerate(cube):
        valid = band[band != NODATA].astype(float)
        entry = _sub(statistics, "bandID", number=str(i + 1))
        _sub(entry, "wavelength", f"{WAVELENGTHS[i]:g}")
        _sub(entry, "mean", f"{valid.mean():.3f}" if valid.size else "0")
        _sub(entry, "stdDeviation", f"{valid.std():.3f}" if valid.size else "0")
    ElementTree.indent(root)
    ElementTree.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def write_l1b(folder: Path) -> Path:
    """Write a (tiny) EnMAP L1B product: VNIR and SWIR radiance images apart, in sensor geometry."""
    name = PRODUCT.format(level="L1B")
    product = folder / name
    product.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # sensor geometry: no map grid
        for detector, count in (("VNIR", len(VNIR_BANDS)), ("SWIR", len(SWIR_BANDS))):
            with rasterio.open(product / f"{name}-SPECTRAL_IMAGE_{detector}.TIF", "w", driver="GTiff", width=8,
                               height=8, count=count, dtype="int16") as ds:
                ds.write(np.ones((count, 8, 8), dtype=np.int16))
    root = ElementTree.Element("level_X")
    base = _sub(root, "base")
    _sub(base, "format", "ENMAP_L1B")
    _sub(base, "level", "L1B")
    characterisation = _sub(_sub(root, "specific"), "bandCharacterisation")
    for i, w in enumerate(WAVELENGTHS):
        band = _sub(characterisation, "bandID", number=str(i + 1))
        _sub(band, "wavelengthCenterOfBand", f"{w:g}")
        _sub(band, "GainOfBand", "0.002")
        _sub(band, "OffsetOfBand", "-0.1")
    ElementTree.ElementTree(root).write(product / f"{name}-METADATA.XML", encoding="UTF-8", xml_declaration=True)
    return product
