"""A small EMIT L2A reflectance granule with its mask granule, and an L1B radiance granule.

The layout follows these documents (names, groups, dimensions, types, fill values):

- "EMIT L2A Estimated Surface Reflectance and Uncertainty and Masks 60 m", Version 1
  (EMITL2ARFL.001, doi:10.5067/EMIT/EMITL2ARFL.001), LP DAAC product description: per scene
  NetCDF4 files EMIT_L2A_RFL, EMIT_L2A_RFLUNCERT and EMIT_L2A_MASK; 285 bands, 381-2493 nm;
  a ``location`` group with the geometry lookup table (GLT), lat, lon and elevation;
- "EMIT Level 2A Mask Product User Guide", version 0.1 (JPL D-107874), Tables 1-1 to 1-3: the
  file name ``EMIT_<level>_<product>_<VVV>_<YYYYMMDDTHHMMSS>_<OOOOOOO>_<SSS>.nc``; ``mask``
  float32; ``location/glt_x``, ``glt_y`` int32 (GLT sample and line lookup); ``lat``, ``lon``
  float64; ``sensor_band_parameters/mask_bands`` (strings); the mask layers and their order;
- the EMIT science data system's LP DAAC formatting, which writes these files (repositories
  emit-sds/emit-utils ``daac_converter.py``, emit-sds/emit-sds-l2a and emit-sds-l1b
  ``output_conversion.py``, emit-sds/emit-sds-l1b-geo ``emit_glt.py``), for what the documents
  leave out: root dimensions ``downtrack``, ``crosstrack``, ``bands``, ``ortho_y``, ``ortho_x``;
  ``reflectance`` float32 (downtrack, crosstrack, bands), _FillValue -9999;
  ``sensor_band_parameters/wavelengths`` and ``fwhm`` float32 (nm), ``good_wavelengths`` uint8
  (1 = good, 0 = bad; _FillValue 241, i.e. -9999 mod 256); ``glt_x``/``glt_y`` (ortho_y,
  ortho_x), 1-based, _FillValue 0 = no source pixel; ``lat``/``lon``/``elev`` (downtrack,
  crosstrack) float64, _FillValue -9999; root attributes ``geotransform`` (GDAL order,
  degrees; north-up) and ``spatial_ref`` (WKT of WGS 84) for the GLT grid, ``spatialResolution``,
  bounding latitudes/longitudes, ``title``, ``product_version``; the mask granule's ``mask``
  (downtrack, crosstrack, bands) float32, _FillValue -9999, and ``band_mask`` uint8 (downtrack,
  crosstrack, packed_wavelength_bands); the L1B granule's ``radiance`` (uW/cm^2/SR/nm).

The scene lies over the example scene's footprint (values from it, so its field polygons label
the granule). The sensor looks along the ISS track, rotated :data:`ROTATION_DEG` from north with
a slight shear, :data:`STEP` m between pixels; the GLT grid is EMIT's: geographic, its 60 m
resolution in degrees on a grid aligned to it, each output pixel pointing at the nearest sensor
pixel (0 outside the swath). Band centres are a cubic in the band index fitted to those of a
delivered V001 granule (within 0.5 nm), FWHM linear from 8.42 to 8.81 nm; the water-vapour bands
(1325-1435 and 1770-1962 nm) are flagged in ``good_wavelengths`` and hold -0.01 as EMIT writes
there. The mask granule flags the sensor pixels :data:`CLOUD` as cloud, those around them as
dilated cloud, :data:`WATER` as water (not a quality flag), and fills the aggregate flag.
"""
from __future__ import annotations

from pathlib import Path

import h5netcdf
import h5py
import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform as warp

from . import example_cube

GRANULE = "EMIT_{level}_{product}_001_20220903T163129_2224611_012.nc"
SENSOR_SHAPE = (64, 62)  # downtrack lines, crosstrack samples
STEP = 60.0  # metres between sensor pixels
ROTATION_DEG = 14.0  # the downtrack direction, from north (EMIT looks from the ISS, whose track is not north-south)
SHEAR = 0.05  # crosstrack offset per downtrack line, in pixels
RESOLUTION_DEG = 0.000542232520256367  # EMIT's GLT pixel (spatialResolution of delivered granules)
_BAND = np.arange(285, dtype=np.float64)
WAVELENGTHS = (380.6013 + 7.44727 * _BAND + 1.4494e-4 * _BAND**2 - 6.3434e-7 * _BAND**3).astype(np.float32)
FWHM = np.linspace(8.415, 8.809, 285).astype(np.float32)
BAD = ((WAVELENGTHS > 1325) & (WAVELENGTHS < 1435)) | ((WAVELENGTHS > 1770) & (WAVELENGTHS < 1962))
MASK_BANDS = ["Cloud flag", "Cirrus flag", "Water flag", "Spacecraft Flag", "Dilated Cloud Flag", "AOD550",
              "H2O (g cm-2)", "Aggregate Flag"]
CLOUD = (slice(44, 48), slice(14, 19))  # sensor lines, samples flagged as cloud
WATER = (slice(20, 23), slice(40, 43))
FILL = -9999.0
GLT_FILL = 0
GOOD_FILL = 241  # uint8 fill of good_wavelengths and band_mask: -9999 mod 256
PACKED_BANDS = 36  # band_mask: one bit per band, 285 bands in 36 bytes


def _sensor_axes() -> tuple[np.ndarray, np.ndarray]:
    """Map (UTM) vectors of one step crosstrack and one line downtrack."""
    a = np.deg2rad(ROTATION_DEG)
    across = np.array([np.cos(a), -np.sin(a)]) * STEP  # east-ish
    down = np.array([np.sin(a), np.cos(a)]) * -STEP + SHEAR * across  # south-ish, sheared
    return across, down


def sensor_geometry(centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """UTM x, y of every sensor pixel centre (downtrack, crosstrack)."""
    across, down = _sensor_axes()
    lines, samples = np.mgrid[0:SENSOR_SHAPE[0], 0:SENSOR_SHAPE[1]].astype(float)
    lines, samples = lines - (SENSOR_SHAPE[0] - 1) / 2, samples - (SENSOR_SHAPE[1] - 1) / 2
    return centre[0] + samples * across[0] + lines * down[0], centre[1] + samples * across[1] + lines * down[1]


def _glt(example_crs: CRS, centre: tuple[float, float], lons: np.ndarray,
         lats: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """GLT (glt_x, glt_y; 1-based, 0 = none) on a north-up geographic grid covering the swath,
    and the grid's geotransform."""
    res = RESOLUTION_DEG
    west, north = np.floor(lons.min() / res) * res - res, np.ceil(lats.max() / res) * res + res
    width = int(np.ceil((lons.max() - west) / res)) + 2
    height = int(np.ceil((north - lats.min()) / res)) + 2
    rows, cols = np.mgrid[0:height, 0:width]
    lon, lat = west + (cols + 0.5) * res, north - (rows + 0.5) * res
    x, y = warp("EPSG:4326", example_crs, lon.ravel().tolist(), lat.ravel().tolist())
    offset = np.stack([np.asarray(x) - centre[0], np.asarray(y) - centre[1]])
    across, down = _sensor_axes()
    sample, line = np.linalg.solve(np.column_stack([across, down]), offset)
    sample = np.round(sample + (SENSOR_SHAPE[1] - 1) / 2).astype(int).reshape(height, width)
    line = np.round(line + (SENSOR_SHAPE[0] - 1) / 2).astype(int).reshape(height, width)
    inside = (line >= 0) & (line < SENSOR_SHAPE[0]) & (sample >= 0) & (sample < SENSOR_SHAPE[1])
    glt_x = np.where(inside, sample + 1, GLT_FILL).astype(np.int32)
    glt_y = np.where(inside, line + 1, GLT_FILL).astype(np.int32)
    return glt_x, glt_y, [west, res, -0.0, north, -0.0, -res]


def _scene() -> dict[str, np.ndarray | list[float]]:
    """Everything the granules hold but their names: reflectance, locations, GLT, grid."""
    example = example_cube()
    side = example.values.shape[1] * abs(example.transform.a)
    centre = (example.transform.c + side / 2, example.transform.f - side / 2)
    xs, ys = sensor_geometry(centre)
    cube = example.sample(example.at_wavelengths(WAVELENGTHS), xs, ys)  # (bands, downtrack, crosstrack)
    cube = np.where(np.isfinite(cube), cube, FILL).astype(np.float32)
    cube[BAD] = np.where(cube[BAD] == FILL, FILL, -0.01)  # no retrieval in the water-vapour bands
    lon, lat = warp(example.crs, "EPSG:4326", xs.ravel().tolist(), ys.ravel().tolist())
    lons, lats = np.asarray(lon).reshape(SENSOR_SHAPE), np.asarray(lat).reshape(SENSOR_SHAPE)
    glt_x, glt_y, geotransform = _glt(example.crs, centre, lons, lats)
    return {"reflectance": cube.transpose(1, 2, 0), "lon": lons, "lat": lats,
            "elev": np.full(SENSOR_SHAPE, 215.0), "glt_x": glt_x, "glt_y": glt_y, "geotransform": geotransform}


def _common(f: h5netcdf.File, scene: dict, bands: int, title: str) -> None:
    """Dimensions, global attributes and the location group every EMIT granule has."""
    glt_x = np.asarray(scene["glt_x"])
    f.dimensions = {"downtrack": SENSOR_SHAPE[0], "crosstrack": SENSOR_SHAPE[1], "bands": bands,
                    "ortho_y": glt_x.shape[0], "ortho_x": glt_x.shape[1]}
    gt = np.asarray(scene["geotransform"], dtype=np.float64)
    lons, lats = np.asarray(scene["lon"]), np.asarray(scene["lat"])
    f.attrs.update({
        "ncei_template_version": "NCEI_NetCDF_Swath_Template_v2.0", "Conventions": "CF-1.63",
        "sensor": "EMIT (Earth Surface Mineral Dust Source Investigation)", "instrument": "EMIT", "platform": "ISS",
        "naming_authority": "LPDAAC", "flight_line": "emit20220903t163129_o24661_s012",
        "time_coverage_start": "2022-09-03T16:31:29+0000", "time_coverage_end": "2022-09-03T16:31:41+0000",
        "product_version": "V001", "easternmost_longitude": float(lons.max()),
        "northernmost_latitude": float(lats.max()), "westernmost_longitude": float(lons.min()),
        "southernmost_latitude": float(lats.min()), "spatialResolution": RESOLUTION_DEG,
        "spatial_ref": np.bytes_(CRS.from_epsg(4326).to_wkt()), "geotransform": gt, "day_night_flag": "Day",
        "title": title})
    location = f.create_group("location")
    for name, long_name, units in (("lon", "Longitude (WGS-84)", "degrees east"),
                                   ("lat", "Latitude (WGS-84)", "degrees north"),
                                   ("elev", "Surface Elevation", "m")):
        v = location.create_variable(name, ("downtrack", "crosstrack"), dtype="f8", data=scene[name],
                                     fillvalue=FILL)
        v.attrs.update({"long_name": long_name, "units": units})
    for name, long_name in (("glt_x", "GLT Sample Lookup"), ("glt_y", "GLT Line Lookup")):
        v = location.create_variable(name, ("ortho_y", "ortho_x"), dtype="i4", data=scene[name],
                                     fillvalue=np.int32(GLT_FILL), compression="gzip", compression_opts=9)
        v.attrs.update({"long_name": long_name, "units": "pixel location"})


def _band_parameters(f: h5netcdf.File, good: bool) -> None:
    group = f.create_group("sensor_band_parameters")
    v = group.create_variable("wavelengths", ("bands",), dtype="f4", data=WAVELENGTHS, fillvalue=np.float32(FILL))
    v.attrs.update({"long_name": "Wavelength Centers", "units": "nm"})
    v = group.create_variable("fwhm", ("bands",), dtype="f4", data=FWHM, fillvalue=np.float32(FILL))
    v.attrs.update({"long_name": "Full Width at Half Max", "units": "nm"})
    if good:
        v = group.create_variable("good_wavelengths", ("bands",), dtype="u1", data=(~BAD).astype(np.uint8),
                                  fillvalue=np.uint8(GOOD_FILL))
        v.attrs.update({"long_name": "Wavelengths where reflectance is useable: 1 = good data, 0 = bad data",
                        "units": "unitless"})


def _mask(scene: dict) -> np.ndarray:
    """The mask granule's (downtrack, crosstrack, 8) layers."""
    mask = np.zeros((*SENSOR_SHAPE, len(MASK_BANDS)), dtype=np.float32)
    layer = {name: MASK_BANDS.index(name) for name in MASK_BANDS}
    mask[(*CLOUD, layer["Cloud flag"])] = 1.0
    dilated = (slice(CLOUD[0].start - 1, CLOUD[0].stop + 1), slice(CLOUD[1].start - 1, CLOUD[1].stop + 1))
    mask[(*dilated, layer["Dilated Cloud Flag"])] = 1.0
    mask[(*WATER, layer["Water flag"])] = 1.0
    mask[:, :, layer["AOD550"]] = 0.06
    mask[:, :, layer["H2O (g cm-2)"]] = 1.4
    flags = [layer[n] for n in ("Cloud flag", "Cirrus flag", "Water flag", "Spacecraft Flag", "Dilated Cloud Flag")]
    mask[:, :, layer["Aggregate Flag"]] = mask[:, :, flags].max(axis=2)
    no_data = np.asarray(scene["reflectance"])[:, :, 0] == FILL
    mask[no_data] = FILL  # no geolocated measurement
    return mask


def write(folder: Path, level: str = "L2A", product: str = "RFL") -> Path:
    """Write the reflectance granule and its mask granule into ``folder``; return the reflectance
    granule's path (``level``/``product`` L1B/RAD: :func:`write_l1b`; L2A/MASK: the pair, returning
    the mask granule's path)."""
    if (level, product) == ("L1B", "RAD"):
        return write_l1b(folder)
    if (level, product) not in (("L2A", "RFL"), ("L2A", "MASK")):
        raise ValueError(f"no fixture for EMIT {level} {product}")
    folder.mkdir(parents=True, exist_ok=True)
    scene = _scene()
    path = folder / GRANULE.format(level="L2A", product="RFL")
    with h5netcdf.File(path, "w") as f:
        _common(f, scene, len(WAVELENGTHS), "EMIT L2A Estimated Surface Reflectance 60 m V001")
        _band_parameters(f, good=True)
        v = f.create_variable("reflectance", ("downtrack", "crosstrack", "bands"), dtype="f4",
                              data=scene["reflectance"], fillvalue=np.float32(FILL), compression="gzip",
                              compression_opts=4, shuffle=True)
        v.attrs.update({"long_name": "Surface Reflectance", "units": "unitless"})
    mask_path = folder / GRANULE.format(level="L2A", product="MASK")
    with h5netcdf.File(mask_path, "w") as f:
        _common(f, scene, len(MASK_BANDS), "EMIT L2A Masks 60 m V001")
        f.dimensions["packed_wavelength_bands"] = PACKED_BANDS
        group = f.create_group("sensor_band_parameters")
        v = group.create_variable("mask_bands", ("bands",), dtype=h5py.string_dtype(),
                                  data=np.array(MASK_BANDS, dtype=object))
        v.attrs["long_name"] = "Mask Band Names"
        v = f.create_variable("mask", ("downtrack", "crosstrack", "bands"), dtype="f4", data=_mask(scene),
                              fillvalue=np.float32(FILL), compression="gzip", compression_opts=9)
        v.attrs.update({"long_name": "Masks", "units": "unitless"})
        v = f.create_variable("band_mask", ("downtrack", "crosstrack", "packed_wavelength_bands"), dtype="u1",
                              data=np.zeros((*SENSOR_SHAPE, PACKED_BANDS), dtype=np.uint8),
                              fillvalue=np.uint8(GOOD_FILL), compression="gzip", compression_opts=9)
        v.attrs.update({"long_name": "Per-Wavelength Mask", "units": "unitless"})
    return mask_path if product == "MASK" else path


def write_l1b(folder: Path) -> Path:
    """Write an L1B radiance granule (the level cssd-geo refuses) into ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = _scene()
    path = folder / GRANULE.format(level="L1B", product="RAD")
    radiance = np.where(np.asarray(scene["reflectance"]) == FILL, FILL,
                        np.asarray(scene["reflectance"]) * 10.0).astype(np.float32)  # a stand-in, uW/cm^2/SR/nm
    with h5netcdf.File(path, "w") as f:
        _common(f, scene, len(WAVELENGTHS), "EMIT L1B At-Sensor Calibrated Radiance Data 60 m V001")
        _band_parameters(f, good=False)
        v = f.create_variable("radiance", ("downtrack", "crosstrack", "bands"), dtype="f4", data=radiance,
                              fillvalue=np.float32(FILL), compression="gzip", compression_opts=4, shuffle=True)
        v.attrs.update({"long_name": "Radiance Data", "units": "uW/cm^2/SR/nm"})
    return path
