"""Sensor products as delivered, one small reader each (EnMAP L2A, PRISMA L2D, EMIT L2A).

Every reader returns what :func:`cssd_geo.io.scene.open_scene` returns for a plain raster:
a lazy, Dask-chunked (band, y, x) DataArray on a north-up grid with CRS, transform and
nodata (``da.rio``), carrying what the product says about its values as coordinates:

- along ``band``: ``band_name``, ``wavelength`` and ``fwhm`` (nm), ``scale`` and ``offset``
  (physical value = stored value * scale + offset) and ``bad_band`` (True = flagged bad by
  the product), each where the product has it;
- along (``y``, ``x``): one boolean ``quality_<name>`` coordinate per quality layer of the
  product (cloud, cloud shadow, haze, ...), True where the pixel is to be left out.

``da.attrs["product"]`` names the product (e.g. ``"EnMAP L2A"``). What is done with all this
(scale, drop bad bands) is decided in :mod:`cssd_geo.bands`, the quality layers are applied in
:mod:`cssd_geo.masks`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import xarray as xr

from ..scene import QUALITY_PREFIX

__all__ = ["QUALITY_PREFIX", "ProductReader", "find_reader", "readers"]


@dataclass(frozen=True)
class ProductReader:
    """A product format: whether a path is one, and how to open it."""

    name: str
    matches: Callable[[str], bool]
    read: Callable[[str, dict[str, int]], xr.DataArray]


def readers() -> list[ProductReader]:
    """The product readers, tried in order on a path before the plain GDAL / Zarr readers."""
    from . import emit, enmap, prisma

    return [enmap.READER, prisma.READER, emit.READER]


def find_reader(path: str) -> ProductReader | None:
    """The reader for the product at ``path``, or None for a plain raster or Zarr store."""
    path = os.fspath(path)
    return next((r for r in readers() if r.matches(path)), None)
