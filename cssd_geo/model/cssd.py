"""The CSSD module: windows in, centre-pixel logits out; the same layers run densely on tiles.

:class:`~cssd_geo.config.ModelConfig` holds every hyperparameter of the model. :meth:`CSSD.architecture` is
the plain dict the model file stores, and ``CSSD(**architecture)`` rebuilds the same module,
so a new hyperparameter is a field of ModelConfig read by the layer that uses it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..classes import ClassInfo
from ..config import ModelConfig
from .layers import (
    DilationRefiner,
    SpatialExtractor,
    SpectralExtractor,
    SpectralRefiner,
    conv_radius,
    spectral_aware_pool,
)

EMBED = 256  # SpeFE's embedding width
SPATIAL = 64  # SpaFE's output width
INFERENCE_PIXELS = 4096  # pixels standardised at a time in inference

class CSSD(nn.Module):
    """Central Spectral Self-Distillation classifier.

    A window of ``window = patch + 2 * radius`` pixels goes in (raw band values, NaN for
    missing pixels); ``radius`` is the receptive radius of SpeFR + SpaFE + classifier, read
    off the layers. Those layers run without padding, so the class logits cover exactly the
    central ``patch`` x ``patch`` pixels, which SAP pools into the centre pixel's logits.
    Running the same layers over a tile gives every pixel's logits at once, identical to
    the per-window forward: ``reach = window // 2`` is the halo a tile needs.

    ``config`` is a :class:`ModelConfig` or its dict (as :meth:`architecture` stores it).
    """

    band_mean: torch.Tensor  # buffers: per-band statistics of the training scene
    band_std: torch.Tensor

    def __init__(self, bands: int, n_classes: int, config: ModelConfig | Mapping[str, Any] | None = None,
                 classes: Sequence[ClassInfo] | None = None) -> None:
        super().__init__()
        if config is None:
            config = ModelConfig()
        elif not isinstance(config, ModelConfig):
            config = ModelConfig.from_mapping(config)
        config.validate()
        self.config = config
        self.bands, self.n_classes, self.patch = bands, n_classes, config.patch
        self.classes: list[ClassInfo] = list(classes or [])
        self.metadata: dict[str, Any] = {}  # what the model file stores besides the weights (set on load)
        self.spefe = SpectralExtractor(bands, embed=EMBED)
        refiner = SpectralRefiner if config.refiner == "weighted" else DilationRefiner
        self.spefr = refiner(EMBED, size=config.se_size, depth=config.refiner_depth)
        self.spafe = SpatialExtractor(EMBED, SPATIAL)
        self.classifier = nn.Conv2d(SPATIAL, n_classes, 3)
        self.aux = nn.Linear(EMBED, n_classes)
        self.radius = self.spefe.radius + self.spefr.radius + self.spafe.radius + conv_radius(self.classifier)
        self.window = config.patch + 2 * self.radius
        self.reach = self.window // 2
        self.register_buffer("band_mean", torch.zeros(bands))
        self.register_buffer("band_std", torch.ones(bands))

    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild this module (before its weights): ``CSSD(**arch)``."""
        return {"bands": self.bands, "n_classes": self.n_classes, "config": asdict(self.config)}

    def floats_per_pixel(self) -> int:
        """float32 values the dense forward holds per pixel of a tile at its peak: the input
        spectrum, SpeFE's features (kept for SAP), and SpeFR's working maps (a stage's input,
        its attention map, its running maximum and one block term; the dilation form keeps
        every step), SpaFE and the logits (chunk sizing reads this)."""
        depth = self.config.refiner_depth
        refiner = (4 if depth else 1) if self.config.refiner == "weighted" else 1 + depth
        return self.bands + (1 + refiner) * EMBED + 2 * SPATIAL

    def flops_per_pixel(self) -> int:
        """Floating-point operations of the dense forward per output pixel (2 per
        multiply-add), counted from the layer shapes; element-wise work is left out."""
        e, k, p = self.spefe, self.n_classes, self.patch
        macs = e.channels * 3 * e.segments * e.wide + e.embed * e.wide * e.segments  # SpeFE
        macs += self.config.refiner_depth * EMBED * EMBED  # SpeFR attention (1x1 convolutions)
        macs += EMBED * SPATIAL * 9 + SPATIAL * k * 9  # SpaFE, classifier
        macs += p * p * ((EMBED + k) if self.config.pooling == "sap" else k)  # SAP: cosine weights and weighted sum
        return 2 * macs

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Per-band statistics of the training scene; raw values are standardised with them."""
        self.band_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.band_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))

    def pixel_features(self, spectra: torch.Tensor) -> torch.Tensor:
        """SpeFE of raw spectra [N, S] -> [N, 256]; missing values (NaN) become the band mean."""
        if not self.training and not torch.is_grad_enabled():
            # inference: standardise in slices so no full-size copies of the input are made
            step = INFERENCE_PIXELS * (1 if spectra.device.type == "cpu" else self.spefe.GPU_CHUNK_FACTOR)
            parts = [self.spefe(self._standardise(part)) for part in spectra.split(step)]
            return torch.cat(parts) if parts else spectra.new_zeros(0, EMBED)
        return self.spefe(self._standardise(spectra))

    def centre_logits(self, spectra: torch.Tensor) -> torch.Tensor:
        """The auxiliary centre-spectrum classifier alone: raw spectra [N, S] -> logits [N, K]
        (a purely spectral network, no neighbour is read)."""
        return self.aux(self.pixel_features(spectra))

    def _standardise(self, spectra: torch.Tensor) -> torch.Tensor:
        z = (spectra - self.band_mean).div_(self.band_std)
        return torch.nan_to_num_(z, nan=0.0, posinf=0.0, neginf=0.0)

    def spectral_features(self, x: torch.Tensor) -> torch.Tensor:
        """SpeFE of every pixel: raw [B, S, H, W] -> [B, 256, H, W]."""
        b, s, h, w = x.shape
        feats = self.pixel_features(x.permute(0, 2, 3, 1).reshape(-1, s))
        return feats.view(b, h, w, -1).permute(0, 3, 1, 2)

    def _pooled(self, feats: torch.Tensor) -> torch.Tensor:
        z = self.classifier(self.spafe(self.spefr(feats)))
        if self.config.pooling == "mean":  # the ablation / plain-CNN head: unweighted mean over P x P
            return F.avg_pool2d(z, self.patch, stride=1)
        r = self.radius
        aligned = feats[..., r:feats.shape[-2] - r, r:feats.shape[-1] - r]
        return spectral_aware_pool(aligned, z, self.patch)

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every pixel of a tile: [B, S, H, W] -> [B, K, H - 2 reach, W - 2 reach].
        With ``heads="both"``: log of the mean of both classifiers' probabilities (so that
        their softmax is that mean)."""
        if x.shape[-1] < self.window or x.shape[-2] < self.window:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the window {self.window}")
        feats = self.spectral_features(x)
        heads = self.config.heads if self.config.auxiliary else "window"
        pooled = self._pooled(feats) if heads != "spectral" else None
        if pooled is not None and heads == "window":
            return pooled
        h = self.reach
        centre = feats[..., h:feats.shape[-2] - h, h:feats.shape[-1] - h]
        aux = torch.einsum("bchw,kc->bkhw", centre, self.aux.weight) + self.aux.bias.view(1, -1, 1, 1)
        return aux if pooled is None else combine_heads(pooled, aux)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-pixel logits [B, K] of windows [B, bands, window, window] of raw values."""
        self._check_window(x)
        return self.dense_logits(x)[:, :, 0, 0]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled logits and auxiliary centre-spectrum logits, both [B, K]."""
        self._check_window(x)
        return self.forward_features(self.spectral_features(x))

    def forward_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training heads on SpeFE features of windows [B, 256, window, window]: pooled
        logits and auxiliary centre-spectrum logits, both [B, K]."""
        c = self.window // 2
        return self._pooled(feats)[:, :, 0, 0], self.aux(feats[:, :, c, c])

    def loss(self, patch_logits: torch.Tensor, aux_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The supervised training loss of this model's settings (see :func:`distillation_loss`)."""
        c = self.config
        return distillation_loss(patch_logits, aux_logits, target, c.tau, c.eps, c.auxiliary)

    def teaching_loss(self, patch_logits: torch.Tensor, aux_logits: torch.Tensor,
                      threshold: float, hard: bool = False) -> tuple[torch.Tensor, int]:
        """The loss on unlabelled windows (see :func:`teaching_loss`) and how many passed the threshold."""
        return teaching_loss(patch_logits, aux_logits, self.config.tau, threshold, hard)

    def _check_window(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.bands or x.shape[-1] != self.window or x.shape[-2] != self.window:
            raise ValueError(f"expected windows [B, {self.bands}, {self.window}, {self.window}], got {tuple(x.shape)}")


def combine_heads(window_logits: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
    """Log of the mean of the two classifiers' probabilities (along dim 1)."""
    mean = (torch.softmax(window_logits, dim=1) + torch.softmax(aux_logits, dim=1)) / 2
    return torch.log(mean.clamp_min(1e-30))


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of ``logits`` [N, K] against target distributions ``y`` [N, K]."""
    return -(y * F.log_softmax(logits, dim=1)).sum(1)


def distillation_loss(patch_logits: torch.Tensor, aux_logits: torch.Tensor, target: torch.Tensor,
                      tau: float, eps: float, auxiliary: bool = True) -> torch.Tensor:
    """L = CE(y~, patch) + CE(onehot, aux): the window classifier learns the target
    y~ = eps * softmax(aux / tau) + (1 - eps) * onehot(target) (the auxiliary output detached),
    the auxiliary centre-spectrum classifier learns the labels alone. Its target never holds
    its own output, so its softened output keeps the classes' spectral similarity instead of
    settling on uniform label smoothing. Without ``auxiliary`` (a plain CNN) only
    CE(onehot, patch) is left."""
    onehot = F.one_hot(target, patch_logits.shape[1]).to(patch_logits.dtype)
    if not auxiliary:
        return _cross_entropy(patch_logits, onehot).mean()
    soft = eps * torch.softmax(aux_logits.detach() / tau, dim=1) + (1 - eps) * onehot
    return _cross_entropy(patch_logits, soft).mean() + _cross_entropy(aux_logits, onehot).mean()


def teaching_loss(patch_logits: torch.Tensor, aux_logits: torch.Tensor, tau: float,
                  threshold: float, hard: bool = False) -> tuple[torch.Tensor, int]:
    """Self-distillation on unlabelled windows: the centre-spectrum classifier teaches the
    window classifier. ``aux_logits`` come from the centre spectra as they are (the teacher's
    view), ``patch_logits`` from a strongly augmented view of the same windows. Where the
    teacher's softmax reaches ``threshold``, the window classifier learns the teacher's
    detached output softened by ``tau``; each selected window is weighted by the inverse of
    how many selected windows share its predicted class (class-balanced, so that a
    dominant class does not take over). The mean is over all windows of the batch, so a
    teacher that is confident nowhere adds nothing. With ``hard`` the target is the teacher's
    class itself (a pseudo-label, for the teacher's own training on a strong view). Returns
    the loss and the number of windows that passed."""
    with torch.no_grad():
        confidence, predicted = torch.softmax(aux_logits, dim=1).max(dim=1)
        selected = confidence >= threshold
        counts = torch.bincount(predicted[selected], minlength=aux_logits.shape[1]).to(patch_logits.dtype)
        present = max(1, int((counts > 0).sum()))
        weight = torch.where(selected, selected.sum() / (present * counts[predicted].clamp_min(1)),
                             torch.zeros_like(confidence))
        target = F.one_hot(predicted, aux_logits.shape[1]).to(patch_logits.dtype) if hard \
            else torch.softmax(aux_logits / tau, dim=1)
    loss = (weight * _cross_entropy(patch_logits, target)).sum() / max(1, patch_logits.shape[0])
    return loss, int(selected.sum())
