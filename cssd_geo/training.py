"""Training: labels -> few-shot samples -> windows -> the self-distillation loop -> model file."""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import numpy as np
import rasterio.transform
import torch
import xarray as xr

from .bands import choose_bands, prepare
from .classes import ClassInfo
from .config import Heads, TrainConfig
from .device import describe_device, resolve_device
from .errors import CssdError, reading
from .io.scene import band_names, band_statistics, band_wavelengths, open_scene, scene_grid
from .io.vector import LabelPixels, rasterize_labels, read_labels
from .masks import scene_mask
from .model import CSSD, save_model
from .outputs import OutputSet, check_output, output_file
from .progress import Progress
from .sampling import (
    Samples,
    cut_windows,
    draw_training_pixels,
    draw_unlabelled_pixels,
    held_out_pixels,
    valid_at,
    window_pixels,
)
from .selection import FieldEstimate, cross_validate, label_fields
from .tiling import dihedral_views, read_window

MIN_BANDS = 3  # SpeFE cuts the spectrum into three segments


HeldOut = tuple[np.ndarray, np.ndarray, np.ndarray]  # scene rows, columns and class indices of validation pixels


@dataclass
class TrainResult:
    """What a training run produced."""

    model_path: str
    samples: Samples
    class_field: str
    final_loss: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: epoch, loss, lr, val_oa, taught
    validation_pixels: int = 0
    class_names: list[str] = field(default_factory=list)
    structuring_element: dict[str, Any] = field(default_factory=dict)  # SpeFR's SE at the start and the end
    seconds_per_step: float | None = None
    field_estimate: dict[str, Any] | None = None  # the leave-fields-out choice and estimate (--patch auto)


def train(scene: str | os.PathLike[str] | xr.DataArray, labels: str | os.PathLike[str], output: str | os.PathLike[str],
          config: TrainConfig | None = None, progress: Progress | None = None) -> TrainResult:
    """Train CSSD on ``scene`` from the labelled features in ``labels`` and write ``output``
    (with its training report beside it; all of them or, on a failure, none)."""
    config = config or TrainConfig()
    progress = progress or Progress()
    config.validate()
    device = resolve_device(config.device)
    scene_path = os.fspath(scene) if not isinstance(scene, xr.DataArray) else scene.attrs.get("source")
    labels = os.fspath(labels)
    output = check_output(output, config.overwrite, inputs=(scene_path, labels))
    for path in training_outputs(output).values():
        check_output(path, config.overwrite, inputs=(scene_path, labels))
    start = time.perf_counter()
    raw = scene if isinstance(scene, xr.DataArray) else open_scene(scene)
    grid = scene_grid(raw)
    if grid.crs is None:
        raise CssdError(f"{scene_path}: the scene has no CRS, so labels cannot be placed on it; "
                        "assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
    if raw.sizes["band"] < MIN_BANDS:
        raise CssdError(f"{scene_path}: has {raw.sizes['band']} band(s); CSSD classifies spectra and needs at least "
                        f"{MIN_BANDS} bands (its spectral extractor splits each spectrum in three); give the "
                        "hyperspectral cube, not a single band or a class map")
    with reading(scene_path or "scene"), OutputSet() as outputs:
        mask = scene_mask(raw, config.mask, config.product_masks)
        bands = choose_bands(raw, config.bands, config.exclude_bands, mask, scene_path or "scene", progress)
        if len(bands.kept) < MIN_BANDS:
            raise CssdError(f"{scene_path}: only {len(bands.kept)} band(s) left after --bands/--exclude-bands and "
                            f"dropping bad bands; CSSD needs at least {MIN_BANDS}: keep more bands")
        da = prepare(raw, bands.kept, mask)
        mean, std = band_statistics(da)  # also refuses a scene that is nodata everywhere
        table = read_labels(labels, grid.crs, config.class_field)
        for note in table.notes:
            progress.message(note)
        progress.message(f"labels: {len(table.frame)} features, {len(table.classes)} classes from field "
                         f"{table.class_field!r}")
        if len(table.classes) < 2:
            raise CssdError(f"{labels}: field {table.class_field!r} has a single class; "
                            "a classifier needs at least two")
        raster = rasterize_labels(table, grid)
        for note in raster.notes:
            progress.message(note)
        valid = valid_at(da, raster.rows, raster.cols)
        samples = draw_training_pixels(raster, valid, config.shots, config.seed, scheme=config.sampling,
                                       stride=config.grid_stride, progress=progress)
        held_out = held_out_pixels(raster, samples, valid, config.seed)
        progress.message(f"device: {describe_device(device, config.device)}")  # the inputs are good: work starts
        estimate = None
        if config.auto_patch:
            config, estimate = choose_settings(da, raster, valid, config, device, progress, (mean, std))
        if held_out is not None:
            progress.message(f"validation: overall accuracy of {len(held_out[0])} held-out labelled pixels on up "
                             f"to {VALIDATIONS} epochs")
        history: list[dict[str, Any]] = []
        log: dict[str, Any] = {}
        model, loss = train_model(da, samples, table.classes, config, device, progress,
                                  statistics=(mean, std), held_out=held_out, history=history, log=log)
        xs, ys = rasterio.transform.xy(grid.transform, samples.rows, samples.cols, offset="center")
        save_model(model, output, {
            "band_names": band_names(da), "wavelengths": band_wavelengths(da), "bands": bands.to_dict(),
            "class_field": table.class_field,
            "training_pixels": {"rows": samples.rows.tolist(), "cols": samples.cols.tolist(),
                                "x": np.asarray(xs).tolist(), "y": np.asarray(ys).tolist()},
            "scene": {"path": os.path.abspath(scene_path) if scene_path else None,
                      "crs": grid.crs.to_wkt(), "transform": list(grid.transform)[:6],
                      "height": grid.height, "width": grid.width},
            "train_config": asdict(config), "final_loss": loss,
            "field_estimate": None if estimate is None else estimate.to_dict(),
        }, outputs)
        result = TrainResult(output, samples, table.class_field, loss, time.perf_counter() - start, history,
                             0 if held_out is None else len(held_out[0]), [c.name for c in table.classes],
                             log.get("structuring_element", {}), log.get("seconds_per_step"),
                             None if estimate is None else estimate.to_dict())
        _write_training_report(result, outputs)
    progress.message(f"model written to {output} ({len(samples)} training pixels, {result.seconds:.1f} s); training "
                     f"curve and metrics in {os.path.basename(training_outputs(output)['png'])} and "
                     f"{os.path.basename(training_outputs(output)['json'])}")
    return result


def choose_settings(da: xr.DataArray, raster: LabelPixels, valid: np.ndarray, config: TrainConfig,
                    device: torch.device, progress: Progress, statistics: tuple[np.ndarray, np.ndarray]
                    ) -> tuple[TrainConfig, FieldEstimate]:
    """``--patch auto``: the patch and heads that leave-fields-out cross-validation on all the
    valid labelled pixels chooses (:func:`~cssd_geo.selection.cross_validate`), put into
    ``config``; the defaults stay when there are too few fields. Logs the choice and the
    expected accuracy on unlabelled fields."""
    usable = raster.subset(valid)
    fields = label_fields(usable.rows, usable.cols, usable.index)
    estimate = cross_validate(da, usable.rows, usable.cols, usable.index, fields, raster.classes, config, device,
                              progress, statistics=statistics)
    progress.message(estimate.summary())
    if estimate.patch is None or estimate.heads is None:
        return config, estimate
    model = replace(config.model, patch=estimate.patch, heads=cast(Heads, estimate.heads))
    return replace(config, model=model), estimate


def train_model(da: xr.DataArray, samples: Samples, classes: list[ClassInfo], config: TrainConfig,
                device: torch.device | str = "cpu", progress: Progress | None = None, *,
                statistics: tuple[np.ndarray, np.ndarray] | None = None, held_out: HeldOut | None = None,
                history: list[dict[str, Any]] | None = None,
                log: dict[str, Any] | None = None) -> tuple[CSSD, float]:
    """A CSSD model trained on the windows centred on the ``samples`` pixels of ``da`` (their
    ``index``: class indices in the logit order of ``classes``); returns it in eval mode and
    the last epoch's loss. ``statistics`` (band mean, std) default to the scene's.
    ``held_out`` (rows, cols, class indices) are scored on up to ``VALIDATIONS`` epochs; ``history`` gets
    one dict per epoch; ``log`` gets SpeFR's structuring element at the start and the end and
    the mean seconds per optimiser step.

    With ``config.unlabelled`` > 0 (and the auxiliary classifier), windows centred on valid
    pixels of random scene tiles (:func:`~cssd_geo.sampling.draw_unlabelled_pixels`) join
    every step without a label: the centre-spectrum classifier teaches the window classifier
    on them."""
    progress = progress or Progress()
    device = torch.device(device)
    mean, std = statistics if statistics is not None else band_statistics(da)
    torch.manual_seed(config.seed)
    model = CSSD(da.sizes["band"], len(classes), config.model, classes=classes)
    model.set_normalisation(mean, std)
    progress.message(f"model: window {model.window} px (patch {model.patch} + 2 x radius {model.radius}), "
                     f"{sum(p.numel() for p in model.parameters())} parameters, device {device}")
    spectra, index = window_pixels(da, np.asarray(samples.rows), np.asarray(samples.cols), model.window)
    validate = Validation(da, held_out, model.reach, device) if held_out is not None else None
    data = TrainingWindows(torch.from_numpy(spectra), torch.from_numpy(index),
                           torch.as_tensor(samples.index, dtype=torch.int64))
    unlabelled = None
    if config.unlabelled > 0 and model.config.auxiliary:
        rows, cols = draw_unlabelled_pixels(da, config.seed)
        if rows.size:
            spectra_u, index_u = window_pixels(da, rows, cols, model.window)
            unlabelled = UnlabelledWindows(torch.from_numpy(spectra_u), torch.from_numpy(index_u),
                                           torch.from_numpy(rows), torch.from_numpy(cols))
            progress.message(f"self-distillation: {config.unlabelled} unlabelled windows per step, centred near "
                             f"one of {rows.size} valid pixels of random scene tiles")
    log = log if log is not None else {}
    log["structuring_element"] = {"start": model.spefr.elements()}
    started = time.perf_counter()
    loss = fit(model, data, config, device, progress, validate, history, unlabelled=unlabelled,
               band_std=torch.as_tensor(std, dtype=torch.float32))
    steps = config.epochs_for(len(data.targets)) * len(_batch_starts(len(data.targets), config.batch_size))
    log["seconds_per_step"] = (time.perf_counter() - started) / max(1, steps)
    log["structuring_element"]["end"] = model.spefr.elements()
    return model, loss


def training_outputs(model_path: str) -> dict[str, str]:
    """The training report written next to a model: metrics JSON and curve PNG."""
    stem = os.path.splitext(model_path)[0]
    return {"json": f"{stem}_training.json", "png": f"{stem}_training.png"}


VALIDATIONS = 10  # held-out pixels are scored on at most this many epochs of a run (the last always)
DENSE_VALIDATION_AREA = 512 * 512  # up to this bounding box, held-out pixels are scored by one dense forward pass


class Validation:
    """Overall accuracy of held-out pixels for the model as it is (evaluated in eval mode,
    left in the mode it was in). Pixels within a small bounding box are scored by one dense
    forward pass over it (with its halo, past the scene by the border rule of
    :mod:`cssd_geo.tiling`), others window by window."""

    def __init__(self, da: xr.DataArray, held_out: HeldOut, reach: int, device: torch.device) -> None:
        rows, cols, targets = held_out
        self.rows, self.cols, self.targets, self.device = rows, cols, torch.as_tensor(targets), device
        self.r0, self.c0 = int(rows.min()), int(cols.min())
        r1, c1 = int(rows.max()) + 1, int(cols.max()) + 1
        self.tiles: torch.Tensor | None = None
        self.windows: torch.Tensor | None = None
        if (r1 - self.r0) * (c1 - self.c0) <= DENSE_VALIDATION_AREA:
            block = read_window(da, self.r0 - reach, r1 + reach, self.c0 - reach, c1 + reach)
            self.tiles = torch.from_numpy(block)[None]
        else:
            self.windows = torch.from_numpy(cut_windows(da, rows, cols, 2 * reach + 1))

    @torch.no_grad()
    def __call__(self, model: CSSD) -> float:
        """The overall accuracy of the held-out pixels, 0..1."""
        was_training = model.training
        model.eval()
        try:
            if self.tiles is not None:
                labels = model.dense_logits(self.tiles.to(self.device))[0].argmax(0).cpu()
                predicted = labels[self.rows - self.r0, self.cols - self.c0]
            else:
                assert self.windows is not None
                predicted = torch.cat([model(w.to(self.device)).argmax(1).cpu() for w in self.windows.split(256)])
        finally:
            model.train(was_training)
        return float((predicted == self.targets).float().mean())


def _write_training_report(result: TrainResult, outputs: OutputSet) -> None:
    """The metrics JSON and the curve PNG next to the model, published with it."""
    from . import plots

    paths = training_outputs(result.model_path)
    history = result.history
    report = {"model": os.path.basename(result.model_path), "training_pixels": len(result.samples),
              "validation_pixels": result.validation_pixels, "seconds": result.seconds,
              "final_loss": history[-1]["loss"] if history else None,
              "final_validation_oa": history[-1].get("val_oa") if history else None,
              "seconds_per_step": result.seconds_per_step, "structuring_element": result.structuring_element,
              "field_estimate": result.field_estimate,
              "classes": result.class_names, "epochs": history}
    with output_file(paths["json"], outputs) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    plots.training_curve(history, paths["png"], title=os.path.basename(result.model_path), outputs=outputs)


@dataclass
class TrainingWindows:
    """The training windows of a run: ``spectra`` [M, S] are the distinct pixels of all
    windows, ``windows`` [N, window, window] index them, ``targets`` [N] are class indices."""

    spectra: torch.Tensor
    windows: torch.Tensor
    targets: torch.Tensor


NEIGHBOURHOOD = 4  # a step's unlabelled windows are centred within +- this many pixels of one pixel


@dataclass
class UnlabelledWindows:
    """Windows without labels, stored like :class:`TrainingWindows`: ``spectra`` [M, S] of the
    distinct pixels, ``windows`` [N, window, window] indexing them; ``rows`` and ``cols`` [N]
    are the scene positions of their centres."""

    spectra: torch.Tensor
    windows: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` windows (indices) centred near one random centre, within
        ``NEIGHBOURHOOD`` pixels of it: their windows overlap, so SpeFE runs on a few
        hundred distinct pixels instead of ``count`` whole windows (the step's cost stays
        close to a labels-only step); over the steps the centres cover every tile."""
        anchor = int(torch.randint(len(self), (1,), generator=generator))
        near = torch.nonzero(((self.rows - self.rows[anchor]).abs() <= NEIGHBOURHOOD)
                             & ((self.cols - self.cols[anchor]).abs() <= NEIGHBOURHOOD)).flatten()
        if near.numel() >= count:
            return near[torch.randperm(near.numel(), generator=generator)[:count]]
        return near[torch.randint(near.numel(), (count,), generator=generator)]


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic torch algorithms for the block (same seed, same model on a CPU)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def fit(model: CSSD, data: TrainingWindows, config: TrainConfig, device: torch.device, progress: Progress,
        validate: Callable[[CSSD], float] | None = None, history: list[dict[str, Any]] | None = None, *,
        unlabelled: UnlabelledWindows | None = None, band_std: torch.Tensor | None = None) -> float:
    """The training loop: Adam, the learning-rate schedule of ``config.schedule``, a random
    dihedral view (flips, rotations, transposes: each keeps the centre) of every window, the
    model's self-distillation loss. Returns the last epoch's mean loss.

    With ``unlabelled``, every step also takes ``config.unlabelled`` of those windows, centred
    close together (:meth:`UnlabelledWindows.draw`): the centre-spectrum classifier reads
    each one's centre spectrum as it is (the weak view) and teaches the window classifier on
    a strong view (a dihedral view whose spectra get noise, brightness changes and dropped
    bands, see :func:`_spectral_views`; ``band_std`` scales the noise), where it is
    confident (:meth:`CSSD.teaching_loss`). With ``config.self_training`` the centre-spectrum
    classifier also learns, on the strong view's centre spectrum, the class it gave the clean
    one where it was confident (pseudo-labels, class-balanced alike).

    SpeFE runs once per distinct pixel of a batch and the features are gathered into windows
    (SpeFE works pixel by pixel, so this is exact). ``validate(model) -> accuracy``, when
    given, scores the model after every ``ceil(epochs / VALIDATIONS)``-th epoch and the last
    (the others record None: scoring every epoch cost about a fifth of a run); each epoch's
    loss, learning rate, that accuracy and the share of unlabelled windows taught on are
    appended to ``history``.
    """
    history = history if history is not None else []
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    n = data.windows.shape[0]
    epochs = config.epochs_for(n)
    batches = _batch_starts(n, config.batch_size)
    # cosine: stepped after every batch, reaching 0 at the last one; plateau: after every epoch, on its loss
    per_step = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs * len(batches))) \
        if config.schedule == "cosine" else None
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=5) \
        if config.schedule == "plateau" else None
    progress.stage("train", epochs)
    epoch_loss = float("nan")
    centre = model.window // 2
    every = math.ceil(epochs / VALIDATIONS)  # validate on this many epochs at most, the last among them
    noise = (band_std if band_std is not None else torch.ones(data.spectra.shape[1])) * SPECTRAL_NOISE
    with _deterministic():
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            taught = drawn = 0
            for start in batches:
                progress.check("training")
                idx = order[start:start + config.batch_size]
                pixels, where = torch.unique(_dihedral(data.windows[idx], generator), return_inverse=True)
                raw = [data.spectra[pixels]]
                if unlabelled is not None:
                    pick = unlabelled.draw(config.unlabelled, generator)
                    strong, strong_where = torch.unique(_dihedral(unlabelled.windows[pick], generator),
                                                        return_inverse=True)
                    weak, weak_where = torch.unique(unlabelled.windows[pick, centre, centre], return_inverse=True)
                    raw += [_spectral_views(unlabelled.spectra[strong], noise, generator), unlabelled.spectra[weak]]
                feats = model.pixel_features(torch.cat(raw).to(device))
                windows = feats[where.to(device)]
                if unlabelled is not None:
                    offset = pixels.numel()
                    windows = torch.cat([windows, feats[(strong_where + offset).to(device)]])
                    teacher = model.aux(feats[(weak_where + offset + strong.numel()).to(device)])
                patch_logits, aux_logits = model.forward_features(windows.permute(0, 3, 1, 2).contiguous())
                b = idx.numel()
                loss = model.loss(patch_logits[:b], aux_logits[:b], data.targets[idx].to(device))
                if unlabelled is not None:
                    teaching, passed = model.teaching_loss(patch_logits[b:], teacher.detach(),
                                                           config.teacher_threshold)
                    loss = loss + teaching
                    if config.self_training:  # the teacher learns its own confident classes on the strong view
                        strong_aux = model.aux(windows[b:, centre, centre])
                        loss = loss + model.teaching_loss(strong_aux, teacher.detach(), config.teacher_threshold,
                                                          hard=True)[0]
                    taught, drawn = taught + passed, drawn + config.unlabelled
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if per_step is not None:
                    per_step.step()
                total += float(loss.detach()) * idx.numel()
            epoch_loss = total / n
            if plateau is not None:
                plateau.step(epoch_loss)
            lr = optimiser.param_groups[0]["lr"]
            scored = validate is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs)
            val_oa = validate(model) if validate is not None and scored else None
            history.append({"epoch": epoch + 1, "loss": epoch_loss, "lr": lr, "val_oa": val_oa,
                            "taught": taught / drawn if drawn else None})
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


SPECTRAL_NOISE = 0.05  # strong view: Gaussian noise, in band standard deviations
BRIGHTNESS = 0.1  # strong view: each spectrum scaled by a factor in 1 +- this
BAND_DROPOUT = 0.1  # strong view: share of each spectrum's bands replaced by the band mean


def _dihedral(windows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square window (of anything laid out [N, ..., H, W]) in a random one of the 8
    dihedral views of :func:`~cssd_geo.tiling.dihedral_views`; odd windows keep their centre."""
    views = dihedral_views()
    pick = torch.randint(len(views), (windows.shape[0],), generator=generator)
    out = windows.clone()
    for k, view in enumerate(views):
        chosen = pick == k
        if chosen.any():
            out[chosen] = view.apply(windows[chosen])
    return out


def _spectral_views(spectra: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strongly augmented copies of raw spectra [M, S]: each scaled by a random brightness,
    with Gaussian noise of ``noise`` (per band) added and a random share of its bands set
    missing (NaN, which the model reads as the band mean)."""
    m, s = spectra.shape
    scale = 1 + BRIGHTNESS * (2 * torch.rand(m, 1, generator=generator) - 1)
    out = spectra * scale + torch.randn(m, s, generator=generator) * noise
    return out.masked_fill(torch.rand(m, s, generator=generator) < BAND_DROPOUT, float("nan"))
