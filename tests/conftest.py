"""Small synthetic scenes and labels with a real CRS and transform."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32633"
ORIGIN = (383000.0, 5818000.0)
PIXEL = 30.0
CLASS_NAMES = {1: "roof", 2: "tree", 3: "water"}


def class_layout(height: int, width: int) -> np.ndarray:
    """Three vertical stripes of classes 1, 2, 3."""
    layout = np.ones((height, width), dtype=np.uint8)
    layout[:, width // 3: 2 * width // 3] = 2
    layout[:, 2 * width // 3:] = 3
    return layout


def make_cube(height: int, width: int, bands: int, seed: int = 0) -> np.ndarray:
    """int16 (band, y, x) cube whose spectra depend on the class stripe, with noise."""
    rng = np.random.default_rng(seed)
    layout = class_layout(height, width)
    wl = np.linspace(0, 1, bands)
    signatures = {1: 2000 + 1500 * wl, 2: 3000 - 1800 * wl, 3: 800 + 600 * np.sin(6 * wl)}
    cube = np.zeros((bands, height, width), dtype=np.float64)
    for k, sig in signatures.items():
        cube[:, layout == k] = sig[:, None]
    cube += rng.normal(0, 120, cube.shape)
    return cube.astype(np.int16)


def write_scene(path, cube: np.ndarray, nodata=None, wavelengths=True, crs=CRS) -> str:
    bands, height, width = cube.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=cube.dtype,
                       crs=crs, transform=from_origin(*ORIGIN, PIXEL, PIXEL), nodata=nodata) as ds:
        ds.write(cube)
        for i in range(bands):
            ds.set_band_description(i + 1, f"B{i + 1}")
            if wavelengths:
                ds.update_tags(i + 1, wavelength=f"{450 + 10 * i}", wavelength_units="Nanometers")
    return str(path)


def write_stripe_labels(path, height: int, width: int, crs=CRS, inset: int = 2) -> str:
    """One rectangle per class stripe (inset from the stripe edges), fields class_id and class_name."""
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = ORIGIN
    stripes = [(1, 0, width // 3), (2, width // 3, 2 * width // 3), (3, 2 * width // 3, width)]
    geoms, ids = [], []
    for k, c0, c1 in stripes:
        geoms.append(box(x0 + (c0 + inset) * PIXEL, y0 - (height - inset) * PIXEL,
                         x0 + (c1 - inset) * PIXEL, y0 - inset * PIXEL))
        ids.append(k)
    frame = gpd.GeoDataFrame({"class_id": ids, "class_name": [CLASS_NAMES[k] for k in ids]},
                             geometry=geoms, crs=CRS).to_crs(crs)
    frame.to_file(path, engine="pyogrio")
    return str(path)


@pytest.fixture
def small_scene(tmp_path):
    """A 36 x 42 x 12 GeoTIFF in EPSG:32633 with three class stripes and matching labels."""
    cube = make_cube(36, 42, 12)
    scene = write_scene(tmp_path / "scene.tif", cube)
    labels = write_stripe_labels(tmp_path / "labels.gpkg", 36, 42)
    return scene, labels, cube
