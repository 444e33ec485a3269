"""Every choice of training and validation pixels: the few-shot shots of a training run, the
unlabelled pixels its self-distillation learns from, the held-out pixels its validation
scores, the benchmark protocol's split; and cutting model windows around chosen pixels."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .config import Sampling
from .errors import CssdError
from .io.scene import scene_nodata, valid_pixels
from .io.vector import LabelPixels
from .progress import Progress
from .tiling import group_by_block, read_window, reflect_index

VALIDATION_PIXELS = 2000  # held-out pixels a training run scores (a seeded random subset)
UNLABELLED_TILES = 16  # random scene tiles the unlabelled windows are centred in
UNLABELLED_TILE = 48  # their side: memory is tiles x (side + window - 1)^2 pixels, whatever the scene size



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


def draw_shots(labels: LabelPixels, shots: int, seed: int, *, scheme: Sampling = "random",
               stride: int = 5, valid: np.ndarray | None = None) -> Samples:
    """Draw up to ``shots`` labelled pixels per class with a seeded generator.

    ``scheme="random"`` draws among all labelled pixels of a class; ``"grid"`` draws among
    those on a scene-aligned ``stride`` grid (the semi-overlapping window scheme), falling
    back to all pixels of a class that has none on the grid. A class with fewer pixels than
    ``shots`` gives all it has. ``valid`` (one boolean per labelled pixel) excludes pixels
    that are nodata in the scene. Pixels not drawn stay free for validation.
    """
    rng = np.random.default_rng(seed)
    rows, cols, index = labels.rows, labels.cols, labels.index
    if valid is not None:
        rows, cols, index = rows[valid], cols[valid], index[valid]
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


def draw_training_pixels(raster: LabelPixels, valid: np.ndarray, shots: int, seed: int, *,
                         scheme: Sampling = "random", stride: int = 5, progress: Progress | None = None) -> Samples:
    """The shots of a training run (:func:`draw_shots` among the labelled pixels that are
    ``valid`` in the scene, one boolean per pixel), refusing a class with none and saying
    which have fewer than ``shots`` and how many labelled pixels are nodata."""
    progress = progress or Progress()
    skipped = int((~valid).sum())
    if skipped:
        progress.message(f"{skipped} labelled pixels are nodata in the scene and were left out")
    samples = draw_shots(raster, shots, seed, scheme=scheme, stride=stride, valid=valid)
    for k, c in enumerate(raster.classes):
        if samples.drawn[k] == 0:
            raise CssdError(f"class {c.name!r} (id {c.id}) covers no valid pixel centre of the scene; "
                            "remove it from the labels or enlarge its polygons")
        if samples.drawn[k] < shots:
            progress.message(f"class {c.name!r} (id {c.id}) has {samples.available[k]} labelled pixels, "
                             f"fewer than --shots {shots}: using {samples.drawn[k]}")
    return samples


def validation_subset(count: int, seed: int, size: int = VALIDATION_PIXELS) -> np.ndarray:
    """Positions of a seeded random subset of at most ``size`` of ``count`` pixels, in the
    order drawn."""
    return np.random.default_rng(seed).permutation(count)[:size]


def held_out_pixels(raster: LabelPixels, samples: Samples, valid: np.ndarray,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Labelled, valid pixels not used for training (a :func:`validation_subset`, sorted by
    row): scene rows, columns and class indices, or None when there are none."""
    width = int(max(raster.cols.max(initial=0), np.max(samples.cols, initial=0))) + 1
    trained = np.isin(raster.rows * width + raster.cols, np.asarray(samples.rows) * width + np.asarray(samples.cols))
    free = np.flatnonzero(valid & ~trained)
    if len(free) == 0:
        return None
    picked = free[validation_subset(free.size, seed)]
    picked = picked[np.argsort(raster.rows[picked], kind="stable")]
    return raster.rows[picked], raster.cols[picked], raster.index[picked]


def few_shot_split(labels: np.ndarray, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The benchmark's random split for one seed, on a reference class raster ``labels``
    (0 = unlabelled): k pixels per class, or half the class when it has fewer than 2k, as
    training pixels (rows, cols); every other labelled pixel is tested (the mask)."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for cid in np.unique(labels[labels > 0]):
        r, c = np.nonzero(labels == cid)
        want = shots if len(r) >= 2 * shots else max(1, len(r) // 2)
        pick = rng.choice(len(r), want, replace=False)
        rows.append(r[pick])
        cols.append(c[pick])
    all_rows, all_cols = np.concatenate(rows), np.concatenate(cols)
    test = labels > 0
    test[all_rows, all_cols] = False
    return all_rows, all_cols, test


def field_disjoint_split(labels: np.ndarray, shots: int, seed: int, fields: np.ndarray,
                         gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The benchmark's field-disjoint split for one seed: training pixels (rows, cols) and the
    test mask, on a reference class raster ``labels`` (0 = unlabelled) and its ``fields``
    (connected fields numbered from 1, as :meth:`cssd_geo.datasets.LabelledScene.fields` gives).

    Each class's fields are shuffled; half of them (at least one, at most ``shots``) are
    training fields, the rest test fields. The k shots are drawn round-robin over the training
    fields (one random pixel of each in turn), so they spread over as many fields as the
    protocol allows; every training field gives at least one. Only test fields are tested, and
    of them only pixels more than ``gap`` pixels (Chebyshev distance) from every training
    pixel. A class with a single field is trained on and never tested: the test mask holds
    none of its pixels.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    rows, cols = [], []
    test = np.zeros(labels.shape, dtype=bool)
    flat = fields.ravel()
    for cid in np.unique(labels[labels > 0]):
        ids = rng.permutation(np.unique(fields[labels == cid]))
        n_train = min(shots, max(1, len(ids) // 2))
        queues = [rng.permutation(np.flatnonzero(flat == f)) for f in ids[:n_train]]
        turns = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
        r, c = np.unravel_index(np.asarray(turns[:shots], dtype=np.int64), labels.shape)
        rows.append(r)
        cols.append(c)
        test |= np.isin(fields, ids[n_train:])
    all_rows, all_cols = np.concatenate(rows), np.concatenate(cols)
    trained = np.zeros(labels.shape, dtype=bool)
    trained[all_rows, all_cols] = True
    near = ndimage.maximum_filter(trained, size=2 * gap + 1, mode="constant") if gap > 0 else trained
    return all_rows, all_cols, test & ~near


def draw_unlabelled_pixels(scene: xr.DataArray, seed: int, *, tiles: int = UNLABELLED_TILES,
                           tile: int = UNLABELLED_TILE) -> tuple[np.ndarray, np.ndarray]:
    """Scene rows and columns of valid pixels, with no label, to centre unlabelled training
    windows on: every valid pixel of ``tiles`` random ``tile`` x ``tile`` tiles of the scene
    (the whole scene when it is no larger), shuffled by ``seed``.

    Tiles instead of pixels spread over the scene: the windows of a tile's pixels overlap, so
    their pixels are read and stored once (:func:`window_pixels`), and what is read stays
    bounded on a scene of any size. No label is read here."""
    rng = np.random.default_rng([seed, 7])
    height, width = scene.sizes["y"], scene.sizes["x"]
    th, tw = min(tile, height), min(tile, width)
    across, down = max(1, width // tw), max(1, height // th)
    picks = rng.choice(across * down, size=min(tiles, across * down), replace=False)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for pick in np.sort(picks):
        r0, c0 = int(pick // across) * th, int(pick % across) * tw
        # the last tile of a row or column takes the remainder of the scene
        r1 = height if pick // across == down - 1 else r0 + th
        c1 = width if pick % across == across - 1 else c0 + tw
        valid = valid_pixels(read_window(scene, r0, r1, c0, c1), scene_nodata(scene))
        r, c = np.nonzero(valid)
        rows.append(r + r0)
        cols.append(c + c0)
    r_all, c_all = np.concatenate(rows), np.concatenate(cols)
    order = rng.permutation(r_all.size)
    return r_all[order].astype(np.int64), c_all[order].astype(np.int64)


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
    for members, values in pixels_by_block(scene, unique // width, unique % width, block):
        spectra[members] = values.T
    return spectra, inverse.reshape(rows.size, window, window)


def pixels_by_block(scene: xr.DataArray, rows: np.ndarray, cols: np.ndarray,
                    block: int = 512) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The given scene pixels, read one ``block`` x ``block`` scene block at a time: for each
    block that holds some, their positions in ``rows``/``cols`` and their values, float32
    (band, n), nodata as NaN. Only the part of a block that spans its pixels is read."""
    for members in group_by_block(rows, cols, block):
        r0, r1 = int(rows[members].min()), int(rows[members].max()) + 1
        c0, c1 = int(cols[members].min()), int(cols[members].max()) + 1
        data = read_window(scene, r0, r1, c0, c1)
        yield members, data[:, rows[members] - r0, cols[members] - c0]


def valid_at(scene: xr.DataArray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True for each given pixel that is valid (finite and not nodata) in every band; read
    block by block, so the cost follows the pixels, not their extent."""
    valid = np.zeros(rows.size, dtype=bool)
    for members, values in pixels_by_block(scene, rows, cols):
        valid[members] = np.isfinite(values).all(axis=0)
    return valid


def cut_windows(scene: xr.DataArray, rows: np.ndarray, cols: np.ndarray, window: int,
                block: int = 512) -> np.ndarray:
    """Windows of ``window`` x ``window`` pixels centred on the given pixels, float32
    (N, band, window, window), from the reflect-padded scene, nodata as NaN."""
    spectra, index = window_pixels(scene, rows, cols, window, block)
    return np.ascontiguousarray(spectra[index].transpose(0, 3, 1, 2))
