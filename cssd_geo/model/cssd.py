"""The CSSD module: windows in, centre-pixel logits out; the same layers run densely on tiles."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..classes import ClassInfo
from ..config import POOLINGS
from .layers import SpatialExtractor, SpectralExtractor, SpectralRefiner, conv_radius, spectral_aware_pool

EMBED = 256
INFERENCE_PIXELS = 4096  # pixels standardised at a time in inference


class CSSD(nn.Module):
    """Central Spectral Self-Distillation classifier.

    A window of ``window = patch + 2 * radius`` pixels goes in (raw band values, NaN for
    missing pixels); ``radius`` is the receptive radius of SpeFR + SpaFE + classifier, read
    off the layers. Those layers run without padding, so the class logits cover exactly the
    central ``patch`` x ``patch`` pixels, which SAP pools into the centre pixel's logits.
    Running the same layers over a tile gives every pixel's logits at once, identical to
    the per-window forward: ``reach = window // 2`` is the halo a tile needs.
    """

    def __init__(self, bands: int, n_classes: int, patch: int = 11, se_size: int = 3,
                 se_depth: int = 2, tau: float = 2.0, eps: float = 0.5,
                 classes: Sequence[ClassInfo] | None = None, pooling: str = "sap") -> None:
        super().__init__()
        if patch < 3 or patch % 2 == 0:
            raise ValueError("patch must be odd and >= 3")
        self.bands, self.n_classes, self.patch = bands, n_classes, patch
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        self.se_size, self.se_depth, self.pooling = se_size, se_depth, pooling
        self.tau, self.eps = tau, eps
        self.classes: list[ClassInfo] = list(classes or [])
        self.spefe = SpectralExtractor(bands, embed=EMBED)
        self.spefr = SpectralRefiner(EMBED, size=se_size, depth=se_depth)
        self.spafe = SpatialExtractor(EMBED, 64)
        self.classifier = nn.Conv2d(64, n_classes, 3)
        self.aux = nn.Linear(EMBED, n_classes)
        self.radius = self.spefe.radius + self.spefr.radius + self.spafe.radius + conv_radius(self.classifier)
        self.window = patch + 2 * self.radius
        self.reach = self.window // 2
        self.register_buffer("band_mean", torch.zeros(bands))
        self.register_buffer("band_std", torch.ones(bands))

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
        if self.pooling == "mean":  # the ablation / plain-CNN head: unweighted mean over P x P
            return F.avg_pool2d(z, self.patch, stride=1)
        r = self.radius
        aligned = feats[..., r:feats.shape[-2] - r, r:feats.shape[-1] - r]
        return spectral_aware_pool(aligned, z, self.patch)

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every pixel of a tile: [B, S, H, W] -> [B, K, H - 2 reach, W - 2 reach]."""
        if x.shape[-1] < self.window or x.shape[-2] < self.window:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the window {self.window}")
        return self._pooled(self.spectral_features(x))

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

    def flops_per_pixel(self) -> int:
        """Floating-point operations of the dense forward per output pixel (2 per
        multiply-add), counted from the layer shapes; element-wise work is left out."""
        e, k, p = self.spefe, self.n_classes, self.patch
        macs = e.channels * 3 * e.segments * e.wide + e.embed * e.wide * e.segments  # SpeFE
        macs += self.se_depth * EMBED * EMBED  # SpeFR attention (1x1 convolutions)
        macs += EMBED * 64 * 9 + 64 * k * 9  # SpaFE, classifier
        macs += p * p * ((EMBED + k) if self.pooling == "sap" else k)  # SAP: cosine weights and weighted sum
        return 2 * macs

    def _check_window(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.bands or x.shape[-1] != self.window or x.shape[-2] != self.window:
            raise ValueError(f"expected windows [B, {self.bands}, {self.window}, {self.window}], got {tuple(x.shape)}")


def distillation_loss(patch_logits: torch.Tensor, aux_logits: torch.Tensor, target: torch.Tensor,
                      tau: float, eps: float, auxiliary: bool = True) -> torch.Tensor:
    """L = CE(y~, patch) + CE(y~, aux) with the constant target
    y~ = eps * softmax(aux / tau) + (1 - eps) * onehot(target). Without ``auxiliary`` (a plain
    CNN) only CE(onehot, patch) is left."""
    onehot = F.one_hot(target, patch_logits.shape[1]).to(patch_logits.dtype)
    ce = lambda logits, y: -(y * F.log_softmax(logits, dim=1)).sum(1).mean()  # noqa: E731
    if not auxiliary:
        return ce(patch_logits, onehot)
    soft = eps * torch.softmax(aux_logits.detach() / tau, dim=1) + (1 - eps) * onehot
    return ce(patch_logits, soft) + ce(aux_logits, soft)
