"""Training: labels -> few-shot samples -> windows -> the self-distillation loop -> model file."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import rasterio.transform
import torch
import xarray as xr

from .config import TrainConfig
from .device import resolve_device
from .errors import CssdError, reading, writing
from .io.scene import band_names, band_statistics, band_wavelengths, open_scene, scene_grid, valid_mask
from .io.vector import LabelRaster, read_labels, rasterize_labels
from .model import CSSD, distillation_loss, save_model
from .paths import check_output
from .progress import Progress
from .sampling import Samples, draw_shots, window_pixels

MIN_BANDS = 3  # SpeFE cuts the spectrum into three segments


@dataclass
class TrainResult:
    """What a training run produced."""

    model_path: str
    samples: Samples
    class_field: str
    final_loss: float
    seconds: float


def train(scene: str | os.PathLike | xr.DataArray, labels: str | os.PathLike, output: str | os.PathLike,
          config: TrainConfig | None = None, progress: Progress | None = None) -> TrainResult:
    """Train CSSD on ``scene`` from the labelled features in ``labels`` and write ``output``."""
    config = config or TrainConfig()
    progress = progress or Progress()
    config.validate()
    device = resolve_device(config.device)
    scene_path = scene if not isinstance(scene, xr.DataArray) else scene.attrs.get("source")
    output = check_output(output, config.overwrite, inputs=(scene_path, labels))
    start = time.perf_counter()
    da = scene if isinstance(scene, xr.DataArray) else open_scene(scene)
    grid = scene_grid(da)
    if grid.crs is None:
        raise CssdError(f"{scene_path}: the scene has no CRS, so labels cannot be placed on it; "
                        "assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
    if da.sizes["band"] < MIN_BANDS:
        raise CssdError(f"{scene_path}: has {da.sizes['band']} band(s); CSSD classifies spectra and needs at least "
                        f"{MIN_BANDS} bands (its spectral extractor splits each spectrum in three); give the "
                        "hyperspectral cube, not a single band or a class map")
    with reading(scene_path):
        return _train(da, grid, scene_path, labels, output, config, device, progress, start)


def _train(da, grid, scene_path, labels, output, config, device, progress, start) -> TrainResult:
    """Labels -> samples -> model -> fit -> model file, on an opened scene."""
    mean, std = band_statistics(da)  # also refuses a scene that is nodata everywhere
    table = read_labels(labels, grid.crs, config.class_field)
    for note in table.notes:
        progress.message(note)
    progress.message(f"labels: {len(table.frame)} features, {len(table.classes)} classes from field "
                     f"{table.field!r}")
    if len(table.classes) < 2:
        raise CssdError(f"{labels}: field {table.field!r} has a single class; a classifier needs at least two")
    raster = rasterize_labels(table, grid)
    for note in raster.notes:
        progress.message(note)
    samples = _draw(da, raster, config, progress)

    model, loss = train_model(da, samples.rows, samples.cols, samples.index, table.classes, config, device,
                              progress, (mean, std))

    transform = grid.transform
    xs, ys = rasterio.transform.xy(transform, samples.rows, samples.cols, offset="center")
    with writing(output):
        save_model(model, output, {
            "band_names": band_names(da), "wavelengths": band_wavelengths(da),
            "class_field": table.field,
            "training_pixels": {"rows": samples.rows.tolist(), "cols": samples.cols.tolist(),
                                "x": np.asarray(xs).tolist(), "y": np.asarray(ys).tolist()},
            "scene": {"path": os.path.abspath(scene_path) if scene_path else None,
                      "crs": grid.crs.to_wkt(), "transform": list(transform)[:6],
                      "height": grid.height, "width": grid.width},
            "train_config": asdict(config), "final_loss": loss,
        })
    seconds = time.perf_counter() - start
    progress.message(f"model written to {output} ({len(samples)} training pixels, {seconds:.1f} s)")
    return TrainResult(output, samples, table.field, loss, seconds)


def train_model(da: xr.DataArray, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray,
                classes: list, config: TrainConfig, device: torch.device | str = "cpu",
                progress: Progress | None = None, statistics: tuple | None = None) -> tuple[CSSD, float]:
    """A CSSD model trained on the windows centred on pixels (``rows``, ``cols``) of ``da``
    with class indices ``targets`` (logit order of ``classes``); returns it in eval mode and
    the last epoch's loss. ``statistics`` (band mean, std) default to the scene's."""
    progress = progress or Progress()
    device = torch.device(device)
    mean, std = statistics if statistics is not None else band_statistics(da)
    torch.manual_seed(config.seed)
    model = CSSD(da.sizes["band"], len(classes), patch=config.patch, tau=config.tau, eps=config.eps,
                 classes=classes, se_depth=config.refiner_depth, pooling=config.pooling)
    model.set_normalisation(mean, std)
    progress.message(f"model: window {model.window} px (patch {model.patch} + 2 x radius {model.radius}), "
                     f"{sum(p.numel() for p in model.parameters())} parameters, device {device}")
    spectra, index = window_pixels(da, np.asarray(rows), np.asarray(cols), model.window)
    loss = fit(model, torch.from_numpy(spectra), torch.from_numpy(index), torch.as_tensor(targets, dtype=torch.int64),
               config, device, progress)
    return model, loss


def _draw(da: xr.DataArray, raster: LabelRaster, config: TrainConfig, progress: Progress) -> Samples:
    h, w = raster.index.shape
    valid = valid_mask(da, raster.row_off, raster.row_off + h, raster.col_off, raster.col_off + w)
    skipped = int(((raster.index >= 0) & ~valid).sum())
    if skipped:
        progress.message(f"{skipped} labelled pixels are nodata in the scene and were left out")
    samples = draw_shots(raster, config.shots, config.seed, config.sampling, config.grid_stride, valid)
    for k, c in enumerate(raster.classes):
        if samples.drawn[k] == 0:
            raise CssdError(f"class {c.name!r} (id {c.id}) covers no valid pixel centre of the scene; "
                            "remove it from the labels or enlarge its polygons")
        if samples.drawn[k] < config.shots:
            progress.message(f"class {c.name!r} (id {c.id}) has {samples.available[k]} labelled pixels, "
                             f"fewer than --shots {config.shots}: using {samples.drawn[k]}")
    return samples


def fit(model: CSSD, spectra: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
        device: torch.device, progress: Progress) -> float:
    """The training loop: Adam, ReduceLROnPlateau on the epoch loss, centre-keeping flips,
    the self-distillation loss. Returns the last epoch's mean loss.

    ``spectra`` [M, S] are the distinct pixels of all training windows and ``windows``
    [N, window, window] index them; SpeFE runs once per distinct pixel of a batch and the
    features are gathered into windows (SpeFE works pixel by pixel, so this is exact).
    """
    generator = torch.Generator().manual_seed(config.seed)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # same seed, same model (on CPU)
    try:
        return _fit(model, spectra, windows, targets, config, device, progress, generator)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fit(model: CSSD, spectra: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
         device: torch.device, progress: Progress, generator: torch.Generator) -> float:
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=5)
    n = windows.shape[0]
    progress.stage("train", config.epochs)
    epoch_loss = float("nan")
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            progress.check("training")
            idx = order[start:start + config.batch_size]
            if idx.numel() < 2 and n >= 2:  # BatchNorm needs two samples; fold a lone last one away
                continue
            pixels, where = torch.unique(_flip(windows[idx], generator), return_inverse=True)
            feats = model.pixel_features(spectra[pixels].to(device))
            feats = feats[where.to(device)].permute(0, 3, 1, 2).contiguous()
            patch_logits, aux_logits = model.forward_features(feats)
            loss = distillation_loss(patch_logits, aux_logits, targets[idx].to(device), model.tau, model.eps,
                                     config.auxiliary)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * idx.numel()
        epoch_loss = total / n
        scheduler.step(epoch_loss)
        progress.advance(1, f"loss {epoch_loss:.4f} lr {optimiser.param_groups[0]['lr']:.1e}")
    model.eval()
    return epoch_loss


def _flip(windows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips of each window (of anything laid out [N, ..., H, W]);
    odd windows keep their centre."""
    windows = windows.clone()
    for axis in (-1, -2):
        mask = torch.rand(windows.shape[0], generator=generator) < 0.5
        windows[mask] = windows[mask].flip(axis)
    return windows
