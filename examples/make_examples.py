"""Derive the example scenes in this folder from the real data in ../shared/data.

Run once (python examples/make_examples.py [--data PATH]); the outputs are committed so a
fresh clone has them without the data folder. Needs the cssd_geo package (its environment).

indian_pines/  AVIRIS Indian Pine Site 3 (145 x 145 x 200 corrected bands) as a compressed
               GeoTIFF with band names and wavelengths, and fields.shp: the 16-class ground truth
               polygonised, one polygon per 4-connected field. The georeference is APPROXIMATE
               (the distributed cube has none): UTM zone 16N, 20 m pixels, the upper-left corner
               placed near the site (about 40.5 N, 87.0 W).
berlin/        the EnMAP Berlin Urban Gradient subset (60 x 80 x 177, EPSG:32633, 30 m, real
               georeference) as a GeoTIFF, and its land-cover polygons clipped to the scene.
"""
from __future__ import annotations

import argparse
import os

import geopandas as gpd
import numpy as np
import rasterio
from rasterio import features
from rasterio.transform import from_origin
from shapely.geometry import box, shape

from cssd_geo.datasets import INDIAN_PINES_CLASSES

HERE = os.path.dirname(os.path.abspath(__file__))

# Bands of the 220-band AVIRIS cube removed in the 200-band "corrected" cube (1-based).
INDIAN_PINES_REMOVED = set(range(104, 109)) | set(range(150, 164)) | {220}
# Approximate upper-left corner, UTM 16N (EPSG:32616), 20 m pixels.
INDIAN_PINES_ORIGIN = (500000.0, 4484000.0)


def write_cube(path: str, cube: np.ndarray, crs, transform, names, wavelengths, fwhm=None, nodata=None) -> None:
    """A (band, y, x) cube as a tiled, deflate-compressed GeoTIFF with band names and wavelengths (nm)."""
    profile = dict(driver="GTiff", width=cube.shape[2], height=cube.shape[1], count=cube.shape[0],
                   dtype=cube.dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
                   blockxsize=64, blockysize=64, compress="deflate", predictor=2, zlevel=9, interleave="pixel")
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(cube)
        for i in range(cube.shape[0]):
            ds.set_band_description(i + 1, names[i])
            tags = {"wavelength": f"{wavelengths[i]:.3f}", "wavelength_units": "Nanometers"}
            if fwhm is not None:
                tags["fwhm"] = f"{fwhm[i]:.3f}"
            ds.update_tags(i + 1, **tags)


def indian_pines(data: str) -> None:
    """Write examples/indian_pines/: the scene as GeoTIFF and its ground truth as field polygons."""
    src = os.path.join(data, "indian_pines")
    out = os.path.join(HERE, "indian_pines")
    os.makedirs(out, exist_ok=True)
    cube = np.load(os.path.join(src, "Indian_pines_corrected.npy")).transpose(2, 0, 1)
    gt = np.load(os.path.join(src, "Indian_pines_gt.npy")).astype(np.uint8)
    rows = np.loadtxt(os.path.join(src, "92AV3C.spc"), skiprows=2)
    keep = [i for i in range(220) if i + 1 not in INDIAN_PINES_REMOVED]
    wavelengths, fwhm = rows[keep, 0], rows[keep, 1]
    names = [f"AVIRIS band {i + 1} ({rows[i, 0]:.1f} nm)" for i in keep]
    transform = from_origin(*INDIAN_PINES_ORIGIN, 20.0, 20.0)
    crs = rasterio.crs.CRS.from_epsg(32616)
    write_cube(os.path.join(out, "indian_pines.tif"), cube.astype(np.uint16), crs, transform, names, wavelengths, fwhm)
    fields = [(shape(geom), int(value)) for geom, value in
              features.shapes(gt, mask=gt > 0, transform=transform, connectivity=4)]
    frame = gpd.GeoDataFrame({"field_id": np.arange(1, len(fields) + 1),
                              "class_id": [v for _, v in fields],
                              "class_name": [INDIAN_PINES_CLASSES[v] for _, v in fields]},
                             geometry=[g for g, _ in fields], crs=crs)
    frame.to_file(os.path.join(out, "fields.shp"), engine="pyogrio")
    print(f"indian_pines: {cube.shape} cube, {len(frame)} fields, {int((gt > 0).sum())} labelled pixels")


def berlin(data: str) -> None:
    """Write examples/berlin/: the EnMAP-like scene as GeoTIFF and its land-cover polygons."""
    src = os.path.join(data, "berlin_urban_gradient")
    out = os.path.join(HERE, "berlin")
    os.makedirs(out, exist_ok=True)
    with rasterio.open(os.path.join(src, "EnMAP_BerlinUrbanGradient.bsq")) as ds:
        cube = ds.read()
        crs, transform, nodata, bounds = ds.crs, ds.transform, ds.nodata, ds.bounds
        names = list(ds.descriptions)
        scale = 1000.0 if ds.tags(1).get("wavelength_units", "").lower().startswith("micro") else 1.0
        wavelengths = [float(ds.tags(i)["wavelength"]) * scale for i in range(1, ds.count + 1)]
    write_cube(os.path.join(out, "berlin.tif"), cube, crs, transform, names, wavelengths, nodata=nodata)
    polygons = gpd.read_file(os.path.join(src, "LandCov_BerlinUrbanGradient.shp"), engine="pyogrio")
    polygons = polygons.to_crs(crs)
    clipped = gpd.clip(polygons, box(*bounds))
    clipped = clipped[~clipped.geometry.is_empty][["Level_1", "Level_2", "Level_1_ID", "Level_2_ID", "geometry"]]
    clipped.to_file(os.path.join(out, "landcover.shp"), engine="pyogrio")
    print(f"berlin: {cube.shape} cube, {len(clipped)} class polygons")


def main() -> None:
    """Derive every example scene from the shared data folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"),
                        help="the shared data folder (default ../shared/data beside the checkout)")
    args = parser.parse_args()
    indian_pines(args.data)
    berlin(args.data)


if __name__ == "__main__":
    main()
