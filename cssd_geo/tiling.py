"""Tiles and the scene border: the one rule for pixels outside the scene, the halo a chunk
reads, and the chunk size.

The border rule is numpy's ``pad(mode="reflect")``: the scene is mirrored about its edge
pixels (index -1 reads row 1, index ``size`` reads row ``size - 2``), repeated for indices
further out, and a one-pixel axis repeats its pixel. Training windows and prediction chunks
both read through :func:`reflect_index`, so a pixel's prediction never depends on whether it
was computed from a window or from a chunk.

Dask's own ``map_overlap(boundary="reflect")`` is not used: it mirrors *including* the edge
pixel (numpy's "symmetric": index -1 reads row 0), which would differ from the training
windows by one pixel at every border, and it cannot pad more than one chunk deep.

The eight symmetries of the square (:func:`dihedral_views`) map a tile with its halo onto the
tile, with the same halo, of the turned or mirrored scene: the model's window is a square
centred on its pixel, so running it over a transformed tile and undoing the transform on the
output gives each pixel the prediction for its transformed window (test-time augmentation).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask.array as dsa
import numpy as np
import torch
import xarray as xr

from .errors import CssdError

CHUNK_MEMORY = 128 * 2 ** 20  # bytes one chunk's forward pass may take on a CPU; sets the default --chunk


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside ``0..size-1`` back inside by the border rule (see the module)."""
    index = np.asarray(index)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    m = np.mod(index, period)
    return np.where(m < size, m, period - m)


def read_window(da: xr.DataArray, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """Rows ``row0:row1`` and columns ``col0:col1`` of a (band, y, x) scene as float32,
    reaching past the scene by the border rule; invalid pixels are NaN in every band."""
    from .io.scene import mask_invalid, scene_nodata

    height, width = int(da.sizes["y"]), int(da.sizes["x"])
    rows = reflect_index(np.arange(row0, row1), height)
    cols = reflect_index(np.arange(col0, col1), width)
    r_lo, r_hi, c_lo, c_hi = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    block = np.asarray(da.data[:, r_lo:r_hi, c_lo:c_hi])
    block = block[:, rows - r_lo][:, :, cols - c_lo].astype(np.float32, copy=False)
    return mask_invalid(block, scene_nodata(da))


def group_by_block(rows: np.ndarray, cols: np.ndarray, block: int) -> Iterator[np.ndarray]:
    """The positions in ``rows``/``cols`` of the pixels in each ``block`` x ``block`` block of
    the grid that holds any, block by block in row-major order: reading them a block at a time
    keeps what is read near the pixels, however far apart they lie."""
    if rows.size == 0:
        return
    keys = (rows // block) * (1 + int(cols.max()) // block) + cols // block
    order = np.argsort(keys, kind="stable")
    yield from np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)


def pad_halo(data: dsa.Array, halo: int) -> dsa.Array:
    """Pad the two spatial axes of a lazy (band, y, x) array by ``halo`` pixels on each side
    by the border rule: the pad is the scene's own rows and columns picked by
    :func:`reflect_index`, so it matches training windows for any halo and any scene size."""
    for axis in (1, 2):
        size = data.shape[axis]
        before = reflect_index(np.arange(-halo, 0), size)
        after = reflect_index(np.arange(size, size + halo), size)
        data = dsa.concatenate([dsa.take(data, before, axis=axis), data, dsa.take(data, after, axis=axis)],
                               axis=axis)
    return data


def map_with_halo(function: Callable[..., np.ndarray], data: dsa.Array, halo: int, chunk: int, out_bands: int,
                  **kwargs: Any) -> dsa.Array:
    """Lazy (``out_bands``, y, x) float32 array of ``function`` over ``data`` (band, y, x) in
    ``chunk`` x ``chunk`` tiles: each call gets its tile plus ``halo`` pixels of neighbours on
    every side (the border rule outside the scene) and returns the tile's core, so the result
    does not depend on ``chunk``. ``kwargs`` go to every call."""
    if chunk < halo:
        raise CssdError(f"--chunk {chunk}: smaller than the model's halo of {halo} pixels; use at least {halo}")
    data = data.rechunk((-1, chunk, chunk))
    rows, cols = data.chunks[1], data.chunks[2]

    def grow(sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Chunks of the padded axis: the pad joins the first and last chunk."""
        return (sizes[0] + 2 * halo,) if len(sizes) == 1 else (sizes[0] + halo, *sizes[1:-1], sizes[-1] + halo)

    padded = pad_halo(data, halo).rechunk((-1, grow(rows), grow(cols)))
    return dsa.map_overlap(function, padded, depth={0: 0, 1: halo, 2: halo}, boundary="none", trim=False,
                           dtype=np.float32, chunks=((out_bands,), rows, cols),
                           meta=np.empty((0, 0, 0), np.float32), **kwargs)


@dataclass(frozen=True)
class View:
    """A symmetry of the square on the last two (row, column) axes of a tensor: transpose
    first when ``transpose``, then turn by ``turns`` quarter turns (as ``torch.rot90``)."""

    turns: int
    transpose: bool

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` seen in this view."""
        x = x.transpose(-2, -1) if self.transpose else x
        return torch.rot90(x, self.turns, dims=(-2, -1))

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply`: ``invert(apply(x))`` is ``x``."""
        x = torch.rot90(x, -self.turns, dims=(-2, -1))
        return x.transpose(-2, -1) if self.transpose else x


def dihedral_views() -> tuple[View, ...]:
    """The 8 views of a tile or window used for test-time augmentation: the identity and the
    turns by 90, 180 and 270 degrees, then the transpose, the two flips and the
    anti-transpose (the transpose turned by 90, 180, 270 degrees)."""
    return tuple(View(turns, transpose) for transpose in (False, True) for turns in range(4))


def chunk_side(floats_per_pixel: int, halo: int, memory: int = CHUNK_MEMORY) -> int:
    """Chunk side whose tile plus halo holds ``floats_per_pixel`` float32 values per pixel in
    ``memory`` bytes: a multiple of 32 between 64 and 2048."""
    side = int(math.sqrt(memory / (4 * floats_per_pixel))) - 2 * halo
    return int(min(2048, max(64, side // 32 * 32)))
