"""Small sensor-product files for the tests, written to the products' published layouts.

Each module here (enmap, prisma, emit) writes one product with ``write(folder) -> path``,
following the layout its docstring cites. The pixel values come from the example scene
``examples/indian_pines`` (AVIRIS, 200 bands, UTM 16N, 20 m): products are laid over its
footprint, so its field polygons (``examples/indian_pines/fields.shp``) label them too.
``python tools/make_product_fixtures.py FOLDER`` writes them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SCENE = ROOT / "examples" / "indian_pines" / "indian_pines.tif"
EXAMPLE_FIELDS = ROOT / "examples" / "indian_pines" / "fields.shp"


@dataclass(frozen=True)
class ExampleCube:
    """The example scene as pseudo-reflectance (stored values / 10000, float32, (band, y, x))."""

    values: np.ndarray
    wavelengths: np.ndarray  # nm, increasing
    fwhm: np.ndarray  # nm
    crs: CRS
    transform: Affine

    def at_wavelengths(self, wavelengths: np.ndarray) -> np.ndarray:
        """The cube interpolated (linearly along wavelength, clamped at the ends) to other
        band centres: (len(wavelengths), y, x) float32."""
        flat = self.values.reshape(self.values.shape[0], -1)
        out = np.empty((len(wavelengths), flat.shape[1]), dtype=np.float32)
        for k, w in enumerate(np.asarray(wavelengths, dtype=float)):
            i = int(np.clip(np.searchsorted(self.wavelengths, w), 1, len(self.wavelengths) - 1))
            w0, w1 = self.wavelengths[i - 1], self.wavelengths[i]
            t = float(np.clip((w - w0) / (w1 - w0), 0.0, 1.0))
            out[k] = (1 - t) * flat[i - 1] + t * flat[i]
        return out.reshape(len(wavelengths), *self.values.shape[1:])

    def sample(self, cube: np.ndarray, xs: np.ndarray, ys: np.ndarray, crs: CRS | None = None) -> np.ndarray:
        """Nearest example pixel of ``cube`` (band, y, x on the example grid) at map coordinates
        (``xs``, ``ys``) in ``crs`` (default: the example's); NaN outside the example scene.
        Returns (band, *xs.shape)."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if crs is not None and CRS.from_user_input(crs) != self.crs:
            from rasterio.warp import transform as warp

            tx, ty = warp(crs, self.crs, xs.ravel().tolist(), ys.ravel().tolist())
            xs, ys = np.asarray(tx).reshape(xs.shape), np.asarray(ty).reshape(ys.shape)
        cols, rows = ~self.transform * (xs, ys)
        rows, cols = np.floor(rows).astype(int), np.floor(cols).astype(int)
        inside = (rows >= 0) & (rows < cube.shape[1]) & (cols >= 0) & (cols < cube.shape[2])
        out = np.full((cube.shape[0], *xs.shape), np.nan, dtype=np.float32)
        out[:, inside] = cube[:, rows[inside], cols[inside]]
        return out


def example_cube() -> ExampleCube:
    """Read ``examples/indian_pines/indian_pines.tif`` with its wavelengths and FWHM."""
    with rasterio.open(EXAMPLE_SCENE) as ds:
        values = ds.read().astype(np.float32) / 10000.0
        wavelengths = np.array([float(ds.tags(i)["wavelength"]) for i in range(1, ds.count + 1)])
        fwhm = np.array([float(ds.tags(i)["fwhm"]) for i in range(1, ds.count + 1)])
        return ExampleCube(values, wavelengths, fwhm, ds.crs, ds.transform)


def grid_30m() -> tuple[Affine, int, int]:
    """Transform, height and width of a 30 m grid over the example scene's footprint (the EnMAP
    and PRISMA products' pixel)."""
    example = example_cube()
    t = example.transform
    height = math.ceil(example.values.shape[1] * abs(t.e) / 30.0)
    width = math.ceil(example.values.shape[2] * t.a / 30.0)
    return Affine(30.0, 0.0, t.c, 0.0, -30.0, t.f), height, width
