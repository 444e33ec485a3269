"""Prediction: the scene in tiles, each read with the model's halo (reflect-padded at scene
borders), the model run densely over the tile, the halo trimmed, the core written."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import xarray as xr

from .config import PredictConfig
from .device import resolve_device
from .errors import CssdError
from .io.scene import band_names, band_wavelengths, open_scene, read_block, scene_grid
from .io.writers import ClassMapWriter, write_quicklook
from .model import CSSD, load_model
from .paths import check_output
from .progress import Progress

WAVELENGTH_TOLERANCE_NM = 0.5


@dataclass
class PredictResult:
    """What a prediction run produced."""

    map_path: str
    pixels: int
    nodata_pixels: int
    seconds: float


def check_compatible(model: CSSD, scene: xr.DataArray, scene_name: str, model_name: str) -> None:
    """Refuse a scene whose bands differ from the model's (count; names and wavelengths when
    both sides know them)."""
    meta = getattr(model, "metadata", {}) or {}
    bands = scene.sizes["band"]
    if bands != model.bands:
        raise CssdError(f"{scene_name}: has {bands} bands but model {model_name} was trained on {model.bands}; "
                        "predict on a scene from the same sensor and band subset")
    wl_model, wl_scene = meta.get("wavelengths"), band_wavelengths(scene)
    if wl_model and wl_scene:
        diff = np.abs(np.asarray(wl_model) - np.asarray(wl_scene))
        if diff.max() > WAVELENGTH_TOLERANCE_NM:
            i = int(diff.argmax())
            raise CssdError(f"{scene_name}: band {i + 1} is at {wl_scene[i]:.1f} nm but model {model_name} expects "
                            f"{wl_model[i]:.1f} nm; use a scene with the model's bands in the same order")
    names_model, names_scene = meta.get("band_names"), band_names(scene)
    if names_model and names_scene and list(names_model) != list(names_scene):
        i = next(k for k, (a, b) in enumerate(zip(names_model, names_scene)) if a != b)
        raise CssdError(f"{scene_name}: band {i + 1} is named {names_scene[i]!r} but model {model_name} expects "
                        f"{names_model[i]!r}; use a scene with the model's bands in the same order")


def tiles(height: int, width: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """Row/column ranges (row0, row1, col0, col1) covering the grid in ``size`` blocks."""
    for r in range(0, height, size):
        for c in range(0, width, size):
            yield r, min(r + size, height), c, min(c + size, width)


@torch.no_grad()
def predict_tile(model: CSSD, scene: xr.DataArray, row0: int, row1: int, col0: int, col1: int,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (logit order) and validity of the pixels ``row0:row1, col0:col1``."""
    h = model.reach
    block = read_block(scene, row0 - h, row1 + h, col0 - h, col1 + h)
    valid = np.isfinite(block[0, h:h + row1 - row0, h:h + col1 - col0])
    logits = model.dense_logits(torch.from_numpy(block).unsqueeze(0).to(device))
    return logits[0].argmax(0).cpu().numpy(), valid


def predict_logits(model: CSSD, scene: xr.DataArray, tile: int = 256,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Logits [K, H, W] of every pixel of a (small) scene, tile by tile; for tests and analysis."""
    device = torch.device(device)
    grid = scene_grid(scene)
    out = np.zeros((model.n_classes, grid.height, grid.width), dtype=np.float32)
    h = model.reach
    with torch.no_grad():
        for r0, r1, c0, c1 in tiles(grid.height, grid.width, tile):
            block = torch.from_numpy(read_block(scene, r0 - h, r1 + h, c0 - h, c1 + h)).unsqueeze(0).to(device)
            out[:, r0:r1, c0:c1] = model.dense_logits(block)[0].cpu().numpy()
    return out


def predict(model: str | os.PathLike | CSSD, scene: str | os.PathLike | xr.DataArray, output: str | os.PathLike,
            config: PredictConfig | None = None, progress: Progress | None = None) -> PredictResult:
    """Write the class map of ``scene`` predicted by ``model`` to the GeoTIFF ``output``."""
    config = config or PredictConfig()
    progress = progress or Progress()
    config.validate()
    device = resolve_device(config.device)
    model_name = os.fspath(model) if not isinstance(model, CSSD) else "(in memory)"
    scene_name = os.fspath(scene) if not isinstance(scene, xr.DataArray) else scene.attrs.get("source", "scene")
    output = os.fspath(output)
    if os.path.splitext(output)[1].lower() not in (".tif", ".tiff"):
        raise CssdError(f"{output}: the class map is written as GeoTIFF; give an output name ending in .tif")
    check_output(output, config.overwrite, inputs=(scene_name, model_name))
    if config.quicklook:
        check_output(config.quicklook, config.overwrite, inputs=(scene_name, model_name, output))
    net = model if isinstance(model, CSSD) else load_model(model)
    net = net.to(device).eval()
    da = scene if isinstance(scene, xr.DataArray) else open_scene(scene)
    check_compatible(net, da, scene_name, model_name)
    grid = scene_grid(da)
    lookup = np.array([c.id for c in net.classes])
    start = time.perf_counter()
    nodata_pixels = 0
    blocks = list(tiles(grid.height, grid.width, config.tile))
    progress.stage("predict", len(blocks))
    with ClassMapWriter(output, grid, net.classes, tags={"CSSD_MODEL": os.path.basename(model_name)}) as writer:
        for r0, r1, c0, c1 in blocks:
            progress.check("prediction")
            index, valid = predict_tile(net, da, r0, r1, c0, c1, device)
            ids = np.where(valid, lookup[index], writer.nodata)
            nodata_pixels += int((~valid).sum())
            writer.write(r0, c0, ids)
            progress.advance(1)
    seconds = time.perf_counter() - start
    progress.message(f"map written to {output} ({grid.width} x {grid.height} px, {seconds:.1f} s)")
    if config.quicklook:
        write_quicklook(output, config.quicklook)
        progress.message(f"quicklook written to {config.quicklook}")
    return PredictResult(output, grid.width * grid.height, nodata_pixels, seconds)
