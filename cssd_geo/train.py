"""Training: labels -> few-shot samples -> windows -> the self-distillation loop -> model file."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import rasterio.transform
import torch
import xarray as xr

from .config import TrainConfig
from .device import resolve_device
from .errors import CssdError, reading, writing
from .io.scene import (band_names, band_statistics, band_wavelengths, open_scene, read_block, scene_grid,
                       valid_mask)
from .io.vector import LabelRaster, read_labels, rasterize_labels
from .model import CSSD, distillation_loss, save_model
from .paths import check_output
from .progress import Progress
from .sampling import Samples, cut_windows, draw_shots, window_pixels

MIN_BANDS = 3  # SpeFE cuts the spectrum into three segments


@dataclass
class TrainResult:
    """What a training run produced."""

    model_path: str
    samples: Samples
    class_field: str
    final_loss: float
    seconds: float
    history: list = field(default_factory=list)  # per epoch: epoch, loss, lr, val_oa (None without held-out pixels)


def train(scene: str | os.PathLike | xr.DataArray, labels: str | os.PathLike, output: str | os.PathLike,
          config: TrainConfig | None = None, progress: Progress | None = None) -> TrainResult:
    """Train CSSD on ``scene`` from the labelled features in ``labels`` and write ``output``."""
    config = config or TrainConfig()
    progress = progress or Progress()
    config.validate()
    device = resolve_device(config.device)
    scene_path = scene if not isinstance(scene, xr.DataArray) else scene.attrs.get("source")
    output = check_output(output, config.overwrite, inputs=(scene_path, labels))
    for path in training_outputs(output).values():
        check_output(path, config.overwrite, inputs=(scene_path, labels))
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
    samples, valid = _draw(da, raster, config, progress)
    held_out = _held_out(raster, samples, valid, config.seed)
    if held_out is not None:
        progress.message(f"validation: overall accuracy of {len(held_out[0])} held-out labelled pixels after "
                         "each epoch")
    history: list[dict] = []
    model, loss = train_model(da, samples.rows, samples.cols, samples.index, table.classes, config, device,
                              progress, (mean, std), held_out, history)

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
    _write_training_report(output, history, len(samples), held_out, seconds, table.classes)
    progress.message(f"model written to {output} ({len(samples)} training pixels, {seconds:.1f} s); training "
                     f"curve and metrics in {os.path.basename(training_outputs(output)['png'])} and "
                     f"{os.path.basename(training_outputs(output)['json'])}")
    return TrainResult(output, samples, table.field, loss, seconds, history)


def train_model(da: xr.DataArray, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray,
                classes: list, config: TrainConfig, device: torch.device | str = "cpu",
                progress: Progress | None = None, statistics: tuple | None = None,
                held_out: tuple | None = None, history: list | None = None) -> tuple[CSSD, float]:
    """A CSSD model trained on the windows centred on pixels (``rows``, ``cols``) of ``da``
    with class indices ``targets`` (logit order of ``classes``); returns it in eval mode and
    the last epoch's loss. ``statistics`` (band mean, std) default to the scene's.
    ``held_out`` (rows, cols, class indices) are scored after each epoch; ``history`` gets
    one dict per epoch."""
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
    validate = Validation(da, *held_out, model.reach, device) if held_out is not None else None
    loss = fit(model, torch.from_numpy(spectra), torch.from_numpy(index), torch.as_tensor(targets, dtype=torch.int64),
               config, device, progress, validate, history)
    return model, loss


def training_outputs(model_path: str) -> dict[str, str]:
    """The training report written next to a model: metrics JSON and curve PNG."""
    stem = os.path.splitext(model_path)[0]
    return {"json": f"{stem}_training.json", "png": f"{stem}_training.png"}


VALIDATION_PIXELS = 2000  # held-out pixels scored after each epoch (a seeded random subset)
DENSE_VALIDATION_AREA = 512 * 512  # up to this bounding box, scored by one dense forward pass


def _held_out(raster: LabelRaster, samples: Samples, valid: np.ndarray, seed: int):
    """Labelled, valid pixels not used for training (at most VALIDATION_PIXELS), or None."""
    h, w = raster.index.shape
    free = (raster.index >= 0) & valid
    free[samples.rows - raster.row_off, samples.cols - raster.col_off] = False
    r, c = np.nonzero(free)
    if len(r) == 0:
        return None
    pick = np.random.default_rng(seed).permutation(len(r))[:VALIDATION_PIXELS]
    r, c = np.sort(r[pick]), c[pick][np.argsort(r[pick], kind="stable")]
    return r + raster.row_off, c + raster.col_off, raster.index[r, c].astype(np.int64)


class Validation:
    """Overall accuracy of held-out pixels for the model as it is (evaluated in eval mode,
    left in the mode it was in). Pixels within a small bounding box are scored by one dense
    forward pass over it (with its halo, reflect-padded at scene borders), others window by
    window."""

    def __init__(self, da: xr.DataArray, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray, reach: int,
                 device: torch.device) -> None:
        self.rows, self.cols, self.targets, self.device = rows, cols, torch.as_tensor(targets), device
        self.r0, self.c0 = int(rows.min()), int(cols.min())
        r1, c1 = int(rows.max()) + 1, int(cols.max()) + 1
        if (r1 - self.r0) * (c1 - self.c0) <= DENSE_VALIDATION_AREA:
            block = read_block(da, self.r0 - reach, r1 + reach, self.c0 - reach, c1 + reach)
            self.tiles = torch.from_numpy(block)[None]
        else:
            self.tiles = None
            self.windows = torch.from_numpy(cut_windows(da, rows, cols, 2 * reach + 1))

    @torch.no_grad()
    def __call__(self, model: CSSD) -> float:
        was_training = model.training
        model.eval()
        try:
            if self.tiles is not None:
                labels = model.dense_logits(self.tiles.to(self.device))[0].argmax(0).cpu()
                predicted = labels[self.rows - self.r0, self.cols - self.c0]
            else:
                predicted = torch.cat([model(w.to(self.device)).argmax(1).cpu() for w in self.windows.split(256)])
        finally:
            model.train(was_training)
        return float((predicted == self.targets).float().mean())


def _write_training_report(output: str, history: list, n_train: int, held_out, seconds: float, classes) -> None:
    """The metrics JSON and the curve PNG next to the model (written atomically)."""
    import json

    from . import plots

    paths = training_outputs(output)
    report = {"model": os.path.basename(output), "training_pixels": n_train,
              "validation_pixels": 0 if held_out is None else int(len(held_out[0])), "seconds": seconds,
              "final_loss": history[-1]["loss"] if history else None,
              "final_validation_oa": history[-1].get("val_oa") if history else None,
              "classes": [c.name for c in classes], "epochs": history}
    with writing(paths["json"]):
        tmp = paths["json"] + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, paths["json"])
        plots.training_curve(history, paths["png"], title=os.path.basename(output))


def _draw(da: xr.DataArray, raster: LabelRaster, config: TrainConfig,
          progress: Progress) -> tuple[Samples, np.ndarray]:
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
    return samples, valid


def fit(model: CSSD, spectra: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
        device: torch.device, progress: Progress, validate=None, history: list | None = None) -> float:
    """The training loop: Adam, the learning-rate schedule of ``config.schedule``, centre-keeping flips,
    the self-distillation loss. Returns the last epoch's mean loss.

    ``spectra`` [M, S] are the distinct pixels of all training windows and ``windows``
    [N, window, window] index them; SpeFE runs once per distinct pixel of a batch and the
    features are gathered into windows (SpeFE works pixel by pixel, so this is exact).

    ``validate(model) -> accuracy``, when given, scores the model after each epoch; each
    epoch's loss, learning rate and that accuracy are appended to ``history``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # same seed, same model (on CPU)
    try:
        return _fit(model, spectra, windows, targets, config, device, progress, generator, validate,
                    history if history is not None else [])
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fit(model: CSSD, spectra: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
         device: torch.device, progress: Progress, generator: torch.Generator, validate, history: list) -> float:
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    n = windows.shape[0]
    epochs = config.epochs_for(n)
    batches = _batch_starts(n, config.batch_size)
    if config.schedule == "cosine":  # stepped after every batch, reaching 0 at the last one
        per_step = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs * len(batches)))
    else:  # stepped after every epoch, on its loss
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=5)
    progress.stage("train", epochs)
    epoch_loss = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in batches:
            progress.check("training")
            idx = order[start:start + config.batch_size]
            pixels, where = torch.unique(_flip(windows[idx], generator), return_inverse=True)
            feats = model.pixel_features(spectra[pixels].to(device))
            feats = feats[where.to(device)].permute(0, 3, 1, 2).contiguous()
            patch_logits, aux_logits = model.forward_features(feats)
            loss = distillation_loss(patch_logits, aux_logits, targets[idx].to(device), model.tau, model.eps,
                                     config.auxiliary)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if config.schedule == "cosine":
                per_step.step()
            total += float(loss.detach()) * idx.numel()
        epoch_loss = total / n
        if config.schedule != "cosine":
            plateau.step(epoch_loss)
        lr = optimiser.param_groups[0]["lr"]
        val_oa = validate(model) if validate is not None else None
        history.append({"epoch": epoch + 1, "loss": epoch_loss, "lr": lr, "val_oa": val_oa})
        note = f"loss {epoch_loss:.4f} lr {lr:.1e}" + (f" val OA {100 * val_oa:.1f}%" if val_oa is not None else "")
        if val_oa is not None:
            progress.message(f"epoch {epoch + 1}/{epochs}: {note}")
        progress.advance(1, note)
    model.eval()
    return epoch_loss


def _batch_starts(n: int, batch_size: int) -> list[int]:
    """Where each batch of an epoch starts; a lone last sample is left out of the epoch
    (BatchNorm needs two), unless it is the only one."""
    return [start for start in range(0, n, batch_size) if min(batch_size, n - start) >= 2 or n < 2]


def _flip(windows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips of each window (of anything laid out [N, ..., H, W]);
    odd windows keep their centre."""
    windows = windows.clone()
    for axis in (-1, -2):
        mask = torch.rand(windows.shape[0], generator=generator) < 0.5
        windows[mask] = windows[mask].flip(axis)
    return windows
