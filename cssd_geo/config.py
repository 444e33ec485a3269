"""Options of the train / predict / evaluate steps, shared by the CLI and the QGIS plugin."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import CssdError

DEFAULT_EPOCHS = 50
# the choices of the options below; the CLI and the validation read them from here
SAMPLINGS = ("random", "grid")  # TrainConfig.sampling
SCHEDULES = ("plateau", "cosine")  # learning-rate schedules of TrainConfig.schedule
POOLINGS = ("sap", "mean")  # TrainConfig.pooling: spectral-aware pooling, or the plain mean (ablation)
PRECISIONS = ("fp32", "bf16", "fp16")  # PredictConfig.precision
MIN_STEPS = 150  # optimiser steps a default training run takes at least


@dataclass
class TrainConfig:
    """How to train a CSSD model.

    ``patch`` is the side P of the pooled window. It must be odd: an even window has no
    centre pixel and a flip would move it. The default 11 is the paper's 10 x 10 made odd.
    ``tau`` softens the auxiliary classifier's output and ``eps`` is its weight in the
    self-distillation target ``eps * softmax(aux / tau) + (1 - eps) * onehot``.
    """

    class_field: str | None = None
    shots: int = 16
    sampling: str = "random"  # "random": k pixels per class; "grid": centres on a stride grid
    grid_stride: int = 5
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or more to reach MIN_STEPS optimiser steps
    patch: int = 11
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # "cosine": anneal to 0 over the run; "plateau": halve on a flat epoch loss
    tau: float = 2.0
    eps: float = 0.5
    # architecture switches for ablations and baselines (the defaults are CSSD)
    pooling: str = "sap"  # "sap": spectral-aware pooling; "mean": plain average over P x P
    refiner_depth: int = 2  # SpeFR's deep dilations; 0 removes SpeFR
    auxiliary: bool = True  # the centre-spectrum classifier and its loss; False: a plain CNN
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False

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
        if self.patch < 3 or self.patch % 2 == 0:
            raise CssdError(f"--patch {self.patch}: the window side must be odd and at least 3 (e.g. 11)")
        if self.sampling not in SAMPLINGS:
            raise CssdError(f"--sampling {self.sampling}: choose {' or '.join(SAMPLINGS)}")
        if self.grid_stride < 1:
            raise CssdError(f"--grid-stride {self.grid_stride}: the stride must be at least 1")
        if self.batch_size < 1:
            raise CssdError(f"--batch-size {self.batch_size}: must be at least 1")
        if not 0.0 <= self.eps <= 1.0:
            raise CssdError(f"--eps {self.eps}: the distillation weight must lie in 0..1")
        if self.tau <= 0:
            raise CssdError(f"--tau {self.tau}: the temperature must be positive")
        if self.schedule not in SCHEDULES:
            raise CssdError(f"--schedule {self.schedule}: choose {' or '.join(SCHEDULES)}")
        if self.pooling not in POOLINGS:
            raise CssdError(f"--pooling {self.pooling}: choose 'sap' (spectral-aware) or 'mean'")
        if self.refiner_depth < 0:
            raise CssdError(f"--refiner-depth {self.refiner_depth}: use 0 (no SpeFR) or more")


@dataclass
class PredictConfig:
    """How to predict a class map.

    ``chunk`` is the side of the blocks computed at once (None: chosen from memory, see
    ``engine.default_chunk``); the output is the same for every chunk size. ``scheduler`` is
    the address of a Dask distributed scheduler (None: this machine). ``probabilities`` and
    ``confidence`` add ``<name>_probabilities.tif`` (a band per class) and
    ``<name>_confidence.tif`` (max probability), uint8 = round(p * 254), 255 = nodata.
    """

    chunk: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    scheduler: str | None = None
    cog: bool = False
    probabilities: bool = False
    confidence: bool = False
    overwrite: bool = False
    quicklook: str | None = None

    def validate(self) -> None:
        """Raise :class:`CssdError` for an option no run could use."""
        if self.chunk is not None and self.chunk < 1:
            raise CssdError(f"--chunk {self.chunk}: the chunk side must be a positive number of pixels "
                            "(e.g. 256), or leave it out to size chunks from memory")
        if self.precision not in PRECISIONS:
            raise CssdError(f"--precision {self.precision}: choose {', '.join(PRECISIONS)}")


@dataclass
class EvaluateConfig:
    """How to compare a class map with reference labels."""

    class_field: str | None = None
    exclude_training: str | None = None  # path of the model whose training pixels are dropped
    json_path: str | None = None
    plot_path: str | None = None  # confusion matrix PNG
