"""Few-shot samplers (k pixels per class) and cutting model windows around them."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .io.scene import read_block, reflect_index
from .io.vector import LabelRaster


@dataclass
class Samples:
    """Training pixels: scene row, column and class index of each, and per-class counts."""

    rows: np.ndarray
    cols: np.ndarray
    index: np.ndarray
    available: dict[int, int] = field(default_factory=dict)  # class index -> labelled pixels
    drawn: dict[int, int] = field(default_factory=dict)  # class index -> pixels drawn

    def __len__(self) -> int:
        return int(self.rows.size)


def draw_shots(labels: LabelRaster, shots: int, seed: int, scheme: str = "random",
               stride: int = 5, valid: np.ndarray | None = None) -> Samples:
    """Draw up to ``shots`` labelled pixels per class with a seeded generator.

    ``scheme="random"`` draws among all labelled pixels of a class; ``"grid"`` draws among
    those on a scene-aligned ``stride`` grid (the semi-overlapping window scheme), falling
    back to all pixels of a class that has none on the grid. A class with fewer pixels than
    ``shots`` gives all it has. ``valid`` (same shape as ``labels.index``) excludes pixels
    that are nodata in the scene. Pixels not drawn stay free for validation.
    """
    rng = np.random.default_rng(seed)
    rows, cols, index = labels.pixels()
    if valid is not None:
        keep = valid[rows - labels.row_off, cols - labels.col_off]
        rows, cols, index = rows[keep], cols[keep], index[keep]
    picked, available, drawn = [], {}, {}
    for k in range(len(labels.classes)):
        members = np.flatnonzero(index == k)
        available[k] = int(members.size)
        if scheme == "grid":
            on_grid = members[(rows[members] % stride == 0) & (cols[members] % stride == 0)]
            if on_grid.size:
                members = on_grid
        take = min(shots, members.size)
        chosen = rng.choice(members, size=take, replace=False) if take else members[:0]
        drawn[k] = int(take)
        picked.append(np.sort(chosen))
    sel = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    return Samples(rows[sel], cols[sel], index[sel], available, drawn)


def window_pixels(scene: xr.DataArray, rows: np.ndarray, cols: np.ndarray, window: int,
                  block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of the ``window`` x ``window`` windows centred on the given pixels, each
    read once: spectra float32 (M, band) of the distinct scene pixels (nodata as NaN) and,
    per window, the index of each of its pixels in that list, int64 (N, window, window).

    Windows reaching past the scene edge take reflected pixels (the scene is reflect-padded).
    Overlapping windows share pixels, which a model that works pixel by pixel first (SpeFE)
    computes once. Pixels are read one scene block at a time.
    """
    half = window // 2
    offsets = np.arange(-half, half + 1)
    height, width = scene.sizes["y"], scene.sizes["x"]
    rr = reflect_index(rows[:, None, None] + offsets[None, :, None], height)
    cc = reflect_index(cols[:, None, None] + offsets[None, None, :], width)
    linear = (rr * width + cc).astype(np.int64)
    linear = np.broadcast_to(linear, (rows.size, window, window))
    unique, inverse = np.unique(linear, return_inverse=True)
    spectra = np.empty((unique.size, scene.sizes["band"]), dtype=np.float32)
    ur, uc = unique // width, unique % width
    keys = (ur // block) * (1 + width // block) + uc // block
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        r0, r1 = int(ur[members].min()), int(ur[members].max()) + 1
        c0, c1 = int(uc[members].min()), int(uc[members].max()) + 1
        data = read_block(scene, r0, r1, c0, c1)
        spectra[members] = data[:, ur[members] - r0, uc[members] - c0].T
    return spectra, inverse.reshape(rows.size, window, window)


def cut_windows(scene: xr.DataArray, rows: np.ndarray, cols: np.ndarray, window: int,
                block: int = 512) -> np.ndarray:
    """Windows of ``window`` x ``window`` pixels centred on the given pixels, float32
    (N, band, window, window), from the reflect-padded scene, nodata as NaN."""
    spectra, index = window_pixels(scene, rows, cols, window, block)
    return np.ascontiguousarray(spectra[index].transpose(0, 3, 1, 2))
