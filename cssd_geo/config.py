"""Options of every step, shared by the CLI and the QGIS plugin.

Each step's options are one dataclass; the model's own hyperparameters are
:class:`ModelConfig`, carried whole in ``TrainConfig.model``. Standard library only (no torch,
no GDAL), so that the command line parses and refuses bad arguments at once. The CLI and the
QGIS plugin name options by their field names and build configs with :func:`from_options`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, get_args

from .errors import CssdError

Pooling = Literal["sap", "mean"]  # spectral-aware pooling, or the plain mean over P x P (ablation)
POOLINGS: tuple[str, ...] = get_args(Pooling)
# the map from both classifiers' probabilities, the window classifier's alone, or the centre-spectrum classifier's alone
Heads = Literal["both", "window", "spectral"]
HEADS: tuple[str, ...] = get_args(Heads)
Refiner = Literal["weighted", "dilation"]  # SpeFR as the method describes it, or the dilation of format-2 files
REFINERS: tuple[str, ...] = get_args(Refiner)


@dataclass(frozen=True)
class ModelConfig:
    """The hyperparameters of a CSSD model (the defaults are CSSD as tuned).

    ``patch`` is the side P of the pooled window. It must be odd: an even window has no
    centre pixel and a flip would move it. The default 11 is the paper's 10 x 10 made odd.
    ``se_size`` is the side of SpeFR's structuring element and ``refiner_depth`` the number of
    its stages (0 removes SpeFR); ``refiner`` picks SpeFR's form (``"weighted"``: SE-weighted
    blocks, see :class:`~cssd_geo.model.layers.SpectralRefiner`; ``"dilation"``: the grey-scale
    dilation that model files before format 3 hold). ``tau`` softens the auxiliary
    classifier's output and ``eps`` is its weight in the window classifier's target
    ``eps * softmax(aux / tau) + (1 - eps) * onehot``; without ``auxiliary`` the loss is the
    window classifier's cross-entropy alone (with ``pooling="mean"`` and no SpeFR: a plain CNN).
    ``heads`` says what a prediction is: ``"both"``, the mean of the window classifier's and
    the centre-spectrum classifier's class probabilities, ``"window"``, the window
    classifier's alone (also what ``"both"`` means without ``auxiliary``), or ``"spectral"``,
    the centre-spectrum classifier's alone (a per-pixel spectral map; it needs ``auxiliary``).
    """

    patch: int = 11
    se_size: int = 3
    refiner_depth: int = 2
    refiner: Refiner = "weighted"
    pooling: Pooling = "sap"
    auxiliary: bool = True
    tau: float = 2.0
    eps: float = 0.5
    heads: Heads = "window"

    def validate(self) -> None:
        """Raise :class:`CssdError` for a setting no model could use (named as the option)."""
        if self.patch < 3 or self.patch % 2 == 0:
            raise CssdError(f"--patch {self.patch}: the window side must be odd and at least 3 (e.g. 11)")
        if self.se_size < 1 or self.se_size % 2 == 0:
            raise CssdError(f"--se-size {self.se_size}: the structuring element side must be odd (e.g. 3)")
        if self.refiner_depth < 0:
            raise CssdError(f"--refiner-depth {self.refiner_depth}: use 0 (no SpeFR) or more")
        if self.refiner not in REFINERS:
            raise CssdError(f"--refiner {self.refiner}: choose 'weighted' (SpeFR) or 'dilation'")
        if self.pooling not in POOLINGS:
            raise CssdError(f"--pooling {self.pooling}: choose 'sap' (spectral-aware) or 'mean'")
        if not 0.0 <= self.eps <= 1.0:
            raise CssdError(f"--eps {self.eps}: the distillation weight must lie in 0..1")
        if self.tau <= 0:
            raise CssdError(f"--tau {self.tau}: the temperature must be positive")
        if self.heads not in HEADS:
            raise CssdError(f"--heads {self.heads}: choose 'window', 'both' or 'spectral'")
        if self.heads == "spectral" and not self.auxiliary:
            raise CssdError("--heads spectral needs the centre-spectrum classifier: leave out --no-auxiliary")


    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ModelConfig:
        """A config from a stored dict; keys it does not know are refused (a newer model)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model settings {unknown}")
        return cls(**values)


Sampling = Literal["random", "grid"]  # k pixels per class among all, or among centres on a stride grid
SAMPLINGS: tuple[str, ...] = get_args(Sampling)

DEFAULT_EPOCHS = 50
MIN_STEPS = 150  # optimiser steps a default training run takes at least

Schedule = Literal["cosine", "plateau"]  # learning rate: anneal to 0 over the run, or halve on a flat epoch loss
Precision = Literal["fp32", "bf16", "fp16"]  # arithmetic of a prediction on CUDA
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)


def _choose(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CssdError(f"{option} {value}: choose {' or '.join(choices)}")


@dataclass
class TrainConfig:
    """How to train a CSSD model: the labels and samples, the optimiser, and ``model``."""

    class_field: str | None = None
    bands: str | None = None  # bands to use: indices and ranges or nm ranges (cssd_geo.bands.parse_band_list)
    exclude_bands: str | None = None  # bands to leave out, the same way
    mask: str | None = None  # raster (non-zero = leave out) or vector (areas to keep)
    product_masks: bool = True  # leave out the pixels the product's quality layers flag
    shots: int = 16
    sampling: Sampling = "random"
    grid_stride: int = 5
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or more to reach MIN_STEPS optimiser steps
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: Schedule = "cosine"
    unlabelled: int = 32  # unlabelled windows per step the centre-spectrum head teaches on (0: labels only)
    teacher_threshold: float = 0.8  # the centre-spectrum head's confidence an unlabelled window needs
    self_training: bool = False  # the centre-spectrum head also learns its own confident labels on the strong view
    auto_patch: bool = False  # choose model.patch and model.heads by leave-fields-out cross-validation (--patch auto)
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)

    def epochs_for(self, samples: int) -> int:
        """Epochs to run on ``samples`` training windows: ``epochs`` when set; otherwise
        DEFAULT_EPOCHS, raised so that training takes at least MIN_STEPS optimiser steps (with
        a few dozen samples an epoch is one step, and 50 steps leave the model undertrained:
        on Salinas-A with 5 shots the test OA was 75-90 % after 50 steps, above 99 % from 80-100 on)."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(samples / self.batch_size))
        return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))

    def validate(self) -> None:
        """Raise :class:`CssdError` for an option no run could use."""
        if self.shots <= 0:
            raise CssdError(f"--shots {self.shots}: the number of labelled pixels per class must be at least 1")
        if self.epochs is not None and self.epochs <= 0:
            raise CssdError(f"--epochs {self.epochs}: train for at least 1 epoch (or leave it out for the default)")
        _choose("--sampling", self.sampling, SAMPLINGS)
        if self.grid_stride < 1:
            raise CssdError(f"--grid-stride {self.grid_stride}: the stride must be at least 1")
        if self.batch_size < 1:
            raise CssdError(f"--batch-size {self.batch_size}: must be at least 1")
        _choose("--schedule", self.schedule, SCHEDULES)
        if self.unlabelled < 0:
            raise CssdError(f"--unlabelled {self.unlabelled}: give the unlabelled windows per step, or 0 to "
                            "train on the labelled pixels alone")
        if not 0.0 < self.teacher_threshold <= 1.0:
            raise CssdError(f"--teacher-threshold {self.teacher_threshold}: the confidence must lie in 0..1 "
                            "(e.g. 0.8)")
        self.model.validate()


@dataclass
class PredictConfig:
    """How to predict a class map.

    ``chunk`` is the side of the blocks computed at once (None: chosen from memory, see
    ``tiling.chunk_side``); the output is the same for every chunk size. ``scheduler`` is
    the address of a Dask distributed scheduler (None: this machine). ``probabilities`` and
    ``confidence`` add ``<name>_probabilities.tif`` (a band per class) and
    ``<name>_confidence.tif`` (max probability), uint8 = round(p * 254), 255 = nodata.
    ``tta`` (test-time augmentation) averages each pixel's class probabilities over the 8
    turns and mirrorings of its window (``tiling.dihedral_views``); the map and the
    probability outputs come from that mean, at 8 times the compute.
    """

    chunk: int | None = None
    mask: str | None = None  # raster (non-zero = leave out) or vector (areas to keep); nodata in the map
    product_masks: bool = True  # leave out the pixels the product's quality layers flag
    device: str = "auto"
    precision: Precision = "fp32"
    scheduler: str | None = None
    cog: bool = False
    probabilities: bool = False
    confidence: bool = False
    overwrite: bool = False
    quicklook: str | None = None
    tta: bool = False
    resume: bool = False  # keep each finished chunk, and continue an interrupted run (cssd_geo.resume)

    def validate(self) -> None:
        """Raise :class:`CssdError` for an option no run could use."""
        if self.resume and self.scheduler:
            raise CssdError("--resume runs on this machine: drop --scheduler (a cluster already survives a lost "
                            "worker)")
        if self.chunk is not None and self.chunk < 1:
            raise CssdError(f"--chunk {self.chunk}: the chunk side must be a positive number of pixels "
                            "(e.g. 256), or leave it out to size chunks from memory")
        _choose("--precision", self.precision, PRECISIONS)


@dataclass
class EvaluateConfig:
    """How to compare a class map with reference labels."""

    class_field: str | None = None
    exclude_training: str | None = None  # path of the model whose training pixels are dropped
    json_path: str | None = None
    plot_path: str | None = None  # confusion matrix PNG


@dataclass
class MapConfig:
    """Train and predict in one step (``cssd-geo map``): every training option (``training``;
    its ``mask``, ``product_masks``, ``device`` and ``overwrite`` serve the prediction too),
    where to keep the model (``model_output``; None: a temporary file, deleted), and the options
    of :class:`PredictConfig` that shape the map and its side outputs."""

    training: TrainConfig = field(default_factory=TrainConfig)
    model_output: str | None = None
    chunk: int | None = None
    precision: Precision = "fp32"
    cog: bool = False
    probabilities: bool = False
    confidence: bool = False
    quicklook: str | None = None
    tta: bool = False

    def prediction(self) -> PredictConfig:
        """The prediction's config."""
        t = self.training
        return PredictConfig(chunk=self.chunk, mask=t.mask, product_masks=t.product_masks, device=t.device,
                             precision=self.precision, cog=self.cog, probabilities=self.probabilities,
                             confidence=self.confidence, overwrite=t.overwrite, quicklook=self.quicklook,
                             tta=self.tta)

    def validate(self) -> None:
        """Raise :class:`CssdError` for an option no run could use."""
        self.training.validate()
        self.prediction().validate()


@dataclass
class SampleConfig:
    """How to draw a stratified random reference sample from a class map (``cssd-geo sample``):
    ``points`` in all, at least ``min_per_class`` in every mapped class (fewer when a class
    has fewer pixels), the rest in proportion to the mapped area."""

    points: int = 500
    min_per_class: int = 50
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        """Raise :class:`CssdError` for an option no run could use."""
        if self.points < 1:
            raise CssdError(f"--points {self.points}: draw at least 1 point (e.g. 500)")
        if self.min_per_class < 0:
            raise CssdError(f"--min-per-class {self.min_per_class}: use 0 or more (e.g. 50)")


Uncertainty = Literal["margin", "entropy"]  # 1 - (p1 - p2) of the two likeliest classes, or normalised entropy
UNCERTAINTIES: tuple[str, ...] = get_args(Uncertainty)


@dataclass
class SuggestConfig:
    """Where to label next (``cssd-geo suggest``): ``points`` pixels where the model is least
    certain (by ``measure``), at least ``spacing`` pixels apart (None: the model's window, so
    their windows do not overlap), spread over the predicted classes. The prediction behind
    them takes ``chunk``, ``mask``, ``product_masks`` and ``device`` as ``predict`` does."""

    points: int = 20
    spacing: int | None = None
    measure: Uncertainty = "margin"
    chunk: int | None = None
    mask: str | None = None
    product_masks: bool = True
    device: str = "auto"
    overwrite: bool = False

    def validate(self) -> None:
        """Raise :class:`CssdError` for an option no run could use."""
        if self.points < 1:
            raise CssdError(f"--points {self.points}: suggest at least 1 point (e.g. 20)")
        if self.spacing is not None and self.spacing < 1:
            raise CssdError(f"--spacing {self.spacing}: give at least 1 pixel, or leave it out for the model's window")
        _choose("--measure", self.measure, UNCERTAINTIES)

    def prediction(self) -> PredictConfig:
        """The config of the prediction whose probabilities the suggestions come from."""
        return PredictConfig(chunk=self.chunk, mask=self.mask, product_masks=self.product_masks, device=self.device,
                             probabilities=True, overwrite=True)


@dataclass
class AreaConfig:
    """How to estimate area and accuracy from reference points (``cssd-geo area``):
    ``class_field`` holds each point's true class (the ``reference`` field of a drawn sample)."""

    class_field: str = "reference"
    json_path: str | None = None
    csv_path: str | None = None  # the per-class table


Config = TypeVar("Config", TrainConfig, PredictConfig, MapConfig, EvaluateConfig, SampleConfig, SuggestConfig,
                 AreaConfig)


def option_names(kind: type[Any]) -> list[str]:
    """The flat option names of a config class: its fields, with a nested config's fields in
    place of that field (``TrainConfig``: ..., ``patch``, ``tau``, ...)."""
    names: list[str] = []
    for f in dataclasses.fields(kind):
        nested = _nested(kind, f.name)
        names += option_names(nested) if nested is not None else [f.name]
    return names


def from_options(kind: type[Config], options: Mapping[str, Any]) -> Config:
    """A config of class ``kind`` from flat option names (as :func:`option_names` lists them);
    options left out keep their defaults, unknown ones are refused."""
    unknown = sorted(set(options) - set(option_names(kind)))
    if unknown:
        raise CssdError(f"unknown option(s) {', '.join(unknown)} for {kind.__name__}; "
                        f"known: {', '.join(option_names(kind))}")
    return _build(kind, options)


def _build(kind: type[Any], options: Mapping[str, Any]) -> Any:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        nested = _nested(kind, f.name)
        if nested is not None:
            values[f.name] = _build(nested, options)
        elif f.name in options:
            values[f.name] = options[f.name]
    return kind(**values)


def _nested(kind: type[Any], name: str) -> type[Any] | None:
    """The config class of field ``name`` of ``kind`` when it is a nested config (a field whose
    default is made by a dataclass), else None."""
    factory = next(f for f in dataclasses.fields(kind) if f.name == name).default_factory
    return factory if isinstance(factory, type) and dataclasses.is_dataclass(factory) else None
