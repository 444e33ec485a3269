"""PRISMA Level 2D (geocoded surface reflectance) products: ``PRS_L2D_STD_<start>_<stop>_<n>.he5``.

Layout, as ASI's PRISMA Products Specification Document (Issue 2.3, 12/03/2020) defines it and
delivered L2D files show it:

- one HDF5 (HDF-EOS5) file; the hyperspectral cubes are ``VNIR_Cube`` (66 band slots) and
  ``SWIR_Cube`` (173 band slots) in ``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields``, uint16, stored
  band-interleaved by line (rows, band slots, columns), rows north to south, each detector's
  slots in decreasing wavelength; beside them ``VNIR_PIXEL_L2_ERR_MATRIX`` and
  ``SWIR_PIXEL_L2_ERR_MATRIX`` (per pixel and band), ``Geolocation Fields/Latitude`` and
  ``Longitude``, and the panchromatic swath ``PRS_L2D_PCO``;
- root attributes: ``Processing_Level`` ("1", "2B", "2C", "2D"); ``List_Cw_Vnir`` /
  ``List_Cw_Swir`` and ``List_Fwhm_Vnir`` / ``List_Fwhm_Swir`` (nm, in slot order; 0 = an unused
  slot); ``List_Cw_Vnir_Flags`` / ``List_Cw_Swir_Flags`` (1 = valid band, 0 = not);
  ``L2ScaleVnirMin`` / ``L2ScaleVnirMax`` and ``L2ScaleSwirMin`` / ``L2ScaleSwirMax``:
  reflectance = min + DN x (max - min) / 65535; ``Epsg_Code`` (the UTM zone's EPSG code) and
  ``Product_{UL,UR,LL,LR}corner_{easting,northing}``, the map coordinates of the corner pixels'
  centres on the 30 m grid (as the EnMAP-Box and prismaread importers also take them: the
  extent reaches half a pixel beyond). DN 0 is fill (outside the image).

What the reader returns: both cubes joined in increasing wavelength, lazily (each chunk opens
the file and reads its rows and columns), values as stored (nodata 0), per band ``scale``
(max - min) / 65535 and ``offset`` min of its detector, ``bad_band`` where the band's flag is 0,
on the map grid the corners give (north-up, 30 m, origin half a pixel out from the upper-left
corner pixel's centre).

Where the detectors overlap (about 920-1010 nm) the rule is: VNIR bands with centres below
:data:`OVERLAP_CUT_NM` (950 nm), SWIR bands from it on; the other detector's bands there are
left out (each would duplicate a neighbour at the noisy end of its detector). Unused slots
(centre 0) are left out as well: they hold no data and have no wavelength. Band names say the
detector and slot (``VNIR 12``), which stay the same from product to product while the
centres move slightly.

Quality layers: L2D has none. PRISMA's cloud, land-cover and sun-glint masks (``Cloud_Mask``,
``LandCover_Mask``, ``SunGlint_Mask``) come only with the L1 product, in sensor geometry; the
L2 error matrices flag pixels band by band (1 invalid in L1, 2 negative, 4 saturated after the
atmospheric correction), which is not a per-pixel mask. Use ``--mask`` for clouds.

Other levels are refused by name: L1 (top-of-atmosphere radiance), L2B (surface radiance) and
L2C (surface reflectance), both not geocoded.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr
from affine import Affine

from ...errors import CssdError, first_line
from . import ProductReader

LEVEL = "L2D"
SWATH = "HDFEOS/SWATHS/PRS_{level}_HCO"
DATA_FIELDS = SWATH + "/Data Fields"
OVERLAP_CUT_NM = 950.0
PIXEL_M = 30.0  # the hyperspectral cubes' grid spacing
DN_MAX = 65535
FILL_DN = 0
LEVEL_KINDS = {"L1": "radiance", "L2B": "surface radiance, not geocoded",
               "L2C": "surface reflectance, not geocoded"}
_NAME = re.compile(r"^PRS_(L\d[A-Z]?)_", re.IGNORECASE)
_SUFFIXES = (".he5", ".h5", ".hdf5", ".hdf")


def matches(path: str) -> bool:
    """A PRISMA product file, whatever its level: named ``PRS_<level>_...he5``, or an HDF5 file
    holding a ``HDFEOS/SWATHS/PRS_*`` swath (a peek at its groups)."""
    if not os.path.isfile(path) or not path.lower().endswith(_SUFFIXES):
        return False
    if _NAME.match(os.path.basename(path)) and path.lower().endswith(".he5"):
        return True
    try:
        import h5py

        with h5py.File(path, "r") as f:
            swaths = f.get("HDFEOS/SWATHS")
            return swaths is not None and any(str(k).upper().startswith("PRS_") for k in swaths)
    except Exception:  # not HDF5, unreadable: not ours to explain
        return False


def _text(value: Any) -> str:
    """An HDF5 string attribute (bytes, str or a one-element array of either) as str."""
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace").strip("\x00 ")
    return str(value).strip()


def _scalar(value: Any) -> float:
    return float(np.asarray(value, dtype="float64").ravel()[0])


def _level(path: str, attrs: Any) -> str | None:
    """The product level (``L1``, ``L2B``, ``L2C``, ``L2D``) from ``Processing_Level``, else the file name."""
    if "Processing_Level" in attrs:
        stated = _text(attrs["Processing_Level"]).upper().lstrip("L")
        if stated:
            return "L" + stated
    found = _NAME.match(os.path.basename(path))
    return found.group(1).upper() if found else None


@dataclass(frozen=True)
class _Slab:
    """One (rows, band slots, columns) cube of the file, read slice by slice: each read opens the
    file, so the lazy array holds no file handle and pickles."""

    path: str
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                return np.asarray(f[self.name][key])
        except (OSError, KeyError) as exc:
            raise CssdError(f"{self.path}: cannot read {self.name} ({first_line(exc)}); the file may be truncated "
                            "or corrupt: download it again") from exc


@dataclass(frozen=True)
class _Detector:
    """What the file says of one detector's cube."""

    name: str  # VNIR or SWIR
    slab: _Slab
    centres: np.ndarray
    widths: np.ndarray
    valid: np.ndarray  # the band flags: True = valid
    low: float  # reflectance of DN 0 ...
    high: float  # ... and of DN 65535


def _detector(path: str, f: Any, name: str) -> _Detector:
    title = name.capitalize()
    dataset = f[f"{DATA_FIELDS.format(level=LEVEL)}/{name}_Cube"]
    centres = np.asarray(f.attrs[f"List_Cw_{title}"], dtype="float64").ravel()
    widths = np.asarray(f.attrs[f"List_Fwhm_{title}"], dtype="float64").ravel()
    flags_key = f"List_Cw_{title}_Flags"
    valid = np.asarray(f.attrs[flags_key]).ravel() != 0 if flags_key in f.attrs else np.ones(centres.size, bool)
    if dataset.ndim != 3 or not dataset.shape[1] == centres.size == widths.size == valid.size:
        raise CssdError(f"{path}: {name}_Cube has shape {dataset.shape} but List_Cw_{title}, List_Fwhm_{title} and "
                        f"{flags_key} list {centres.size}, {widths.size} and {valid.size} bands; the product is "
                        "inconsistent: download it again")
    return _Detector(name, _Slab(path, dataset.name, tuple(dataset.shape), np.dtype(dataset.dtype)), centres,
                     widths, valid, _scalar(f.attrs[f"L2Scale{title}Min"]), _scalar(f.attrs[f"L2Scale{title}Max"]))


def _required(level: str) -> list[str]:
    fields = DATA_FIELDS.format(level=level)
    return [f"{fields}/VNIR_Cube", f"{fields}/SWIR_Cube", "Epsg_Code",
            *(f"Product_{c}corner_{a}" for c in ("UL", "UR", "LL", "LR") for a in ("easting", "northing")),
            *(f"{key}{d}{end}" for d in ("Vnir", "Swir")
              for key, end in (("List_Cw_", ""), ("List_Fwhm_", ""), ("L2Scale", "Min"), ("L2Scale", "Max")))]


def read(path: str, chunks: dict[str, int]) -> xr.DataArray:
    """The VNIR and SWIR cubes of the PRISMA L2D file at ``path`` joined in wavelength order, on its map grid."""
    import h5py
    import rioxarray  # noqa: F401 (registers the .rio accessor)

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CssdError(f"{path}: not a readable HDF5 file ({first_line(exc)}); download the product again") from exc
    with f:
        level = _level(path, f.attrs)
        if level is None:
            raise CssdError(f"{path}: PRISMA file with no Processing_Level attribute and no level in its name; "
                            f"cssd-geo reads PRISMA {LEVEL} files as delivered (PRS_{LEVEL}_...he5): give the "
                            "product's original file")
        if level != LEVEL:
            kind = LEVEL_KINDS.get(level, "not geocoded surface reflectance")
            raise CssdError(f"{path}: PRISMA {level} product ({kind}); cssd-geo reads PRISMA {LEVEL} (geocoded "
                            f"surface reflectance): order or process the {LEVEL} product")
        missing = [n for n in _required(LEVEL) if n not in (f if "/" in n else f.attrs)]
        if missing:
            raise CssdError(f"{path}: PRISMA {LEVEL} file without {', '.join(missing)}; the product is incomplete: "
                            "download it again")
        vnir, swir = _detector(path, f, "VNIR"), _detector(path, f, "SWIR")
        corners = {f"{c}_{a}": _scalar(f.attrs[f"Product_{c}corner_{a}"])
                   for c in ("UL", "UR", "LL", "LR") for a in ("easting", "northing")}
        epsg = int(_scalar(f.attrs["Epsg_Code"]))
    if vnir.slab.shape[0::2] != swir.slab.shape[0::2]:
        raise CssdError(f"{path}: VNIR_Cube is {vnir.slab.shape[0]} x {vnir.slab.shape[2]} pixels but SWIR_Cube "
                        f"{swir.slab.shape[0]} x {swir.slab.shape[2]}; the product is inconsistent: download it again")
    height, width = vnir.slab.shape[0], vnir.slab.shape[2]
    parts: list[dsa.Array] = []
    names: list[str] = []
    coords: dict[str, list[np.ndarray]] = {k: [] for k in ("wavelength", "fwhm", "scale", "offset", "bad_band")}
    token = _token(path)
    for det in (vnir, swir):
        side = (det.centres < OVERLAP_CUT_NM) if det is vnir else (det.centres >= OVERLAP_CUT_NM)
        slots = np.flatnonzero((det.centres > 0) & side)
        slots = slots[np.argsort(det.centres[slots], kind="stable")]
        if slots.size == 0:
            continue
        cube = dsa.from_array(det.slab, chunks=(chunks.get("y", 512), -1, chunks.get("x", 512)), lock=False,
                              name=f"prisma-{det.name}-{token}", meta=np.empty((0, 0, 0), dtype=det.slab.dtype))
        parts.append(cube.transpose(1, 0, 2)[slots])
        names += [f"{det.name} {s + 1}" for s in slots]
        coords["wavelength"].append(det.centres[slots])
        coords["fwhm"].append(det.widths[slots])
        coords["scale"].append(np.full(slots.size, (det.high - det.low) / DN_MAX))
        coords["offset"].append(np.full(slots.size, det.low))
        coords["bad_band"].append(~det.valid[slots])
    if not parts:
        raise CssdError(f"{path}: List_Cw_Vnir and List_Cw_Swir give no band a wavelength; the product is damaged: "
                        "download it again")
    data = dsa.concatenate(parts, axis=0).rechunk({0: chunks.get("band", -1)})
    transform, crs = _grid(path, corners, epsg, height, width)
    da = xr.DataArray(data, dims=("band", "y", "x"), name="scene",
                      coords={"band": np.arange(1, data.shape[0] + 1),
                              "y": transform.f + transform.e * (np.arange(height) + 0.5),
                              "x": transform.c + transform.a * (np.arange(width) + 0.5)})
    da = da.rio.write_crs(crs).rio.write_transform(transform)
    da = da.assign_coords(band_name=("band", names),
                          **{k: ("band", np.concatenate(v)) for k, v in coords.items()})
    da = da.rio.write_nodata(FILL_DN, encoded=False)
    da.attrs["product"] = f"PRISMA {LEVEL}"
    return da


def _token(path: str) -> str:
    """A name for the file's lazy arrays that changes when the file does."""
    from dask.base import tokenize

    stat = os.stat(path)
    return str(tokenize(os.path.abspath(path), stat.st_size, stat.st_mtime_ns))


def _grid(path: str, corners: dict[str, float], epsg: int, height: int, width: int) -> tuple[Affine, Any]:
    """The 30 m north-up grid the corner-pixel centres span, checked against the cube size."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_epsg(epsg)
    except CRSError as exc:
        raise CssdError(f"{path}: Epsg_Code {epsg} is not a known EPSG code ({first_line(exc)}); the product is "
                        "damaged: download it again") from exc
    if not crs.is_projected:
        raise CssdError(f"{path}: Epsg_Code {epsg} is not a projected CRS; PRISMA L2D comes on a UTM grid: order "
                        "the L2D product in its standard (UTM) projection")
    west = min(corners["UL_easting"], corners["LL_easting"])
    east = max(corners["UR_easting"], corners["LR_easting"])
    north = max(corners["UL_northing"], corners["UR_northing"])
    south = min(corners["LL_northing"], corners["LR_northing"])
    span = ((east - west) / PIXEL_M + 1, (north - south) / PIXEL_M + 1)
    if abs(span[0] - width) > 0.5 or abs(span[1] - height) > 0.5:
        raise CssdError(f"{path}: the corner coordinates span {span[1]:.1f} x {span[0]:.1f} pixels of "
                        f"{PIXEL_M:g} m but the cubes hold {height} x {width}; the product is inconsistent: download "
                        "it again")
    half = PIXEL_M / 2
    return Affine(PIXEL_M, 0.0, west - half, 0.0, -PIXEL_M, north + half), crs


READER = ProductReader(f"PRISMA {LEVEL}", matches, read)
