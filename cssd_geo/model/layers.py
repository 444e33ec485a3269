"""The layers of CSSD. Every spatial layer declares its receptive ``radius`` (pixels it
reads on each side) computed from its own definition, so the model's reach is derived,
never typed by hand. Spatial layers use no padding: a window never sees artificial zeros."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def conv_radius(conv: nn.Conv2d) -> int:
    """Receptive radius of an unpadded square 2-D convolution."""
    k, d = conv.kernel_size[0], conv.dilation[0]
    return (k - 1) // 2 * d


class SpectralExtractor(nn.Module):
    """SpeFE: each pixel's spectrum -> BatchNorm -> dilated 1-D conv (kernel 3, dilation 3,
    64 channels) -> ReLU -> wide grouped 1-D conv (64 groups, kernel L = floor(S/3), stride L,
    so three non-overlapping spectral segments) -> BatchNorm -> ReLU -> mean over the segments
    -> a 256-d embedding. Works on pixels one by one, so it adds nothing to the receptive
    radius.

    Both convolutions are computed as matrix products (the same arithmetic as
    ``F.conv1d``, see :meth:`reference`) over chunks of ``chunk`` pixels: the 64 x S
    intermediate is the largest tensor of the whole model, and small chunks keep it in
    reused memory instead of fresh pages, several times faster on a CPU. On a GPU the chunks
    are ``GPU_CHUNK_FACTOR`` times larger, so each kernel launch has enough work.
    """

    radius = 0
    GPU_CHUNK_FACTOR = 128

    def __init__(self, bands: int, channels: int = 64, embed: int = 256, chunk: int = 128) -> None:
        super().__init__()
        if embed % channels:
            raise ValueError("embed must be a multiple of channels")
        self.bands, self.channels, self.embed, self.chunk = bands, channels, embed, chunk
        self.wide = max(1, bands // 3)
        self.segments = bands // self.wide
        # No learnable affine: a scale and shift of the input are already in the dilated
        # conv's weights and bias, and without them no gradient flows back to the input.
        self.bn_in = nn.BatchNorm1d(1, affine=False)
        # conv1d weight layouts: dilated [channels, 1, 3], wide [embed, 1, wide] (groups=channels)
        self.dilated_weight = nn.Parameter(torch.empty(channels, 1, 3))
        self.dilated_bias = nn.Parameter(torch.empty(channels))
        self.wide_weight = nn.Parameter(torch.empty(embed, 1, self.wide))
        self.wide_bias = nn.Parameter(torch.empty(embed))
        self.bn_out = nn.BatchNorm1d(embed)
        for w, b in ((self.dilated_weight, self.dilated_bias), (self.wide_weight, self.wide_bias)):
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)  # nn.Conv1d's default initialisation
            bound = 1 / w[0].numel() ** 0.5
            nn.init.uniform_(b, -bound, bound)

    def _convolve(self, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Both convolutions on [n, S] standardised spectra -> [embed, n * segments], the wide
        one with ``weight`` [embed, 1, wide] and ``bias`` [embed].

        The dilated convolution is one product of its weights with the three taps of every
        position, and a row of ones that carries its bias (no separate pass to add it). The
        wide grouped convolution is one [per_group, wide] x [wide, n * segments] product per
        channel, on a transposed view of the dilated output: several times the FLOP rate of
        the product the other way round, whose result is only ``per_group`` (4) columns wide."""
        n, c, seg, wide = z.shape[0], self.channels, self.segments, self.wide
        used = seg * wide
        padded = F.pad(z, (3, 3))
        taps = z.new_empty(4, n, used)  # [tap (the last: ones), pixel, (segment, position in the segment)]
        for tap, shift in enumerate((0, 3, 6)):
            taps[tap].copy_(padded[:, shift:shift + used])
        taps[3].fill_(1.0)
        kernel = torch.cat([self.dilated_weight.view(c, 3), self.dilated_bias.view(c, 1)], dim=1)
        hidden = torch.mm(kernel, taps.view(4, -1)).relu_()  # [c, (pixel, segment, position)]
        out = torch.baddbmm(bias.view(c, -1, 1), weight.view(c, -1, wide),
                            hidden.view(c, n * seg, wide).transpose(1, 2))
        return out.view(self.embed, n * seg)

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        """[N, S] spectra -> [N, embed]."""
        z = self.bn_in(spectra.unsqueeze(1)).squeeze(1)
        chunk = self.chunk if z.device.type == "cpu" else self.chunk * self.GPU_CHUNK_FACTOR
        if not self.bn_out.training and not torch.is_grad_enabled():
            # inference: BatchNorm with running statistics is a scale and shift per channel,
            # folded into the wide convolution, so every chunk is finished on its own and
            # only the [N, embed] result is ever held in full
            weight, bias = self._folded()
            parts = [self._segment_mean(self._convolve(part, weight, bias).relu_()).t() for part in z.split(chunk)]
            return torch.cat(parts) if parts else z.new_zeros(0, self.embed)
        weight, bias = self.wide_weight, self.wide_bias
        if torch.is_grad_enabled():
            # recompute each chunk in the backward pass instead of keeping the 64 x S
            # intermediate of every pixel: less memory, and the chunk stays in cache
            parts = [checkpoint(self._convolve, part, weight, bias, use_reentrant=False) for part in z.split(chunk)]
        else:
            parts = [self._convolve(part, weight, bias) for part in z.split(chunk)]
        x = torch.cat(parts, dim=1) if parts else z.new_zeros(self.embed, 0)
        # BatchNorm over pixels and segments alike, on the [1, embed, N * segments] layout
        # (the same statistics as [N * segments, embed], without a transposed copy), ReLU,
        # the mean over segments
        return self._segment_mean(F.relu(self.bn_out(x.unsqueeze(0))[0])).t()

    def _segment_mean(self, x: torch.Tensor) -> torch.Tensor:
        """[embed, n * segments] -> the mean over the segments, [embed, n] (summed slice by
        slice: a reduction over a last axis of 3 is several times slower)."""
        x = x.view(self.embed, -1, self.segments)
        total = x[..., 0]
        for k in range(1, self.segments):
            total = total + x[..., k]
        return total / self.segments

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The wide convolution's weight and bias with the output BatchNorm's running
        statistics and affine folded in (inference)."""
        bn = self.bn_out
        assert bn.running_var is not None and bn.running_mean is not None  # tracked statistics
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.affine:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        return self.wide_weight * scale.view(-1, 1, 1), self.wide_bias * scale + shift

    def reference(self, spectra: torch.Tensor) -> torch.Tensor:
        """The same layer written with ``F.conv1d`` (slower; for checking :meth:`forward`)."""
        x = self.bn_in(spectra.unsqueeze(1))
        x = F.relu(F.conv1d(x, self.dilated_weight, self.dilated_bias, dilation=3, padding=3))
        x = F.conv1d(x, self.wide_weight, self.wide_bias, stride=self.wide, groups=self.channels)
        return F.relu(self.bn_out(x)).mean(dim=-1)  # BatchNorm1d on [N, embed, segments]: same statistics


class SpectralRefiner(nn.Module):
    """SpeFR: ``depth`` refinement stages in a row, each with its own learnable ``size`` x
    ``size`` structuring element (SE). A stage looks at the feature map's ``size`` x ``size``
    spatial blocks (the map shifted by each offset q of the SE), weights block q by the SE's
    value s_q = sigmoid(SE_GAIN * theta_q) (a multiplication), gates each weighted block by a
    1x1 convolution + sigmoid attention, and keeps the element-wise maximum over the blocks.

    The attention convolution is shared by the blocks of a stage and linear, so
    ``conv(s_q * x_q) = s_q * (W x)_q + b``: W x is computed once per stage and shifted, which
    costs one 1x1 convolution per stage instead of one per block (the same arithmetic).

    The SE starts peaked at the centre (s = 0.88 there, 0.5 elsewhere) and its parameter is
    scaled by ``SE_GAIN``: an Adam step moves theta by about the learning rate, so without the
    gain the SE would move by a few hundredths over a training run and stay where it started.
    """

    SE_GAIN = 10.0
    SE_CENTRE = 2.0  # initial SE_GAIN * theta at the centre (sigmoid 0.88); 0 elsewhere (sigmoid 0.5)

    def __init__(self, channels: int = 256, size: int = 3, depth: int = 2) -> None:
        super().__init__()
        if size % 2 == 0:
            raise ValueError("the structuring element side must be odd")
        self.size = size
        self.structuring = nn.ParameterList(nn.Parameter(self._initial(size)) for _ in range(depth))
        self.attention = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(depth))
        self.radius = depth * (size // 2)

    @classmethod
    def _initial(cls, size: int) -> torch.Tensor:
        theta = torch.zeros(size, size)
        theta[size // 2, size // 2] = cls.SE_CENTRE / cls.SE_GAIN
        return theta

    def elements(self) -> list[list[list[float]]]:
        """Each stage's structuring element as weights in 0..1 (for the training report)."""
        return [torch.sigmoid(self.SE_GAIN * theta.detach()).cpu().tolist() for theta in self.structuring]

    def stage(self, x: torch.Tensor, theta: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """One unpadded stage: max over q of s_q x_q * sigmoid(s_q (W x)_q + b)."""
        s = torch.sigmoid(self.SE_GAIN * theta)
        wx = F.conv2d(x, conv.weight)  # the attention's linear part, shared by every block
        bias = conv.bias if conv.bias is not None else x.new_zeros(x.shape[1])
        if torch.is_grad_enabled():
            return WeightedBlockMax.apply(x, wx, s, bias)
        return weighted_block_max(x, wx, s, bias)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ``depth`` stages in a row (depth 0: no refiner, the input unchanged)."""
        for theta, conv in zip(self.structuring, self.attention, strict=True):
            assert isinstance(conv, nn.Conv2d)  # (ModuleList items are typed as Module)
            x = self.stage(x, theta, conv)
        return x


CHANNEL_GROUP = 32  # SpeFR's stage works on this many channels at a time: its maps stay in cache


def weighted_block_max(x: torch.Tensor, wx: torch.Tensor, s: torch.Tensor, bias: torch.Tensor,
                       track: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SpeFR's stage arithmetic: ``max_q s_q x_q * sigmoid(s_q wx_q + bias)`` over the blocks
    q of the ``k`` x ``k`` element ``s`` (x_q: ``x`` shifted by q, unpadded) and, with
    ``track``, the index of the block that gave each maximum (uint8; the first on a tie).

    Channels are independent here, so on a CPU the stage runs ``CHANNEL_GROUP`` channels at a
    time: the nine block terms of a group then stay in cache instead of streaming whole
    feature maps through memory nine times (the same arithmetic, element by element)."""
    k = s.shape[0]
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    out = x.new_empty((x.shape[0], x.shape[1], h, w))
    chosen = torch.zeros((x.shape[0], x.shape[1], h, w), dtype=torch.uint8, device=x.device) if track else None
    step = CHANNEL_GROUP if x.device.type == "cpu" else x.shape[1]  # a GPU wants fewer, larger kernels
    for c0 in range(0, x.shape[1], step):
        group = slice(c0, c0 + step)
        _block_max(x[:, group], wx[:, group], s, bias[group].view(1, -1, 1, 1), out[:, group],
                   None if chosen is None else chosen[:, group])
    return out, chosen


def _block_max(x: torch.Tensor, wx: torch.Tensor, s: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
               chosen: torch.Tensor | None) -> None:
    """:func:`weighted_block_max` on one group of channels, written into ``out`` (and
    ``chosen``). One block term is alive at a time besides the running maximum."""
    k = s.shape[0]
    h, w = out.shape[-2:]
    for q, (dy, dx) in enumerate(_offsets(k)):
        term = (wx[..., dy:dy + h, dx:dx + w] * s[dy, dx]).add_(b).sigmoid_()
        term.mul_(x[..., dy:dy + h, dx:dx + w]).mul_(s[dy, dx])
        if q == 0:
            out.copy_(term)
            continue
        if chosen is not None:  # q grows, so the latest block to beat the maximum is the largest q that did
            # (arithmetic on the comparison's bytes: several times faster than masked_fill_ on a CPU)
            torch.maximum(chosen, torch.gt(term, out).view(torch.uint8).mul_(q), out=chosen)
        torch.maximum(out, term, out=out)


def _offsets(k: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(k) for dx in range(k)]


class WeightedBlockMax(torch.autograd.Function):
    """:func:`weighted_block_max` with a hand-written backward pass. The gradient of a
    maximum flows only through the block that gave it, so the backward pass gathers each
    output's block once instead of replaying the nine multiplications, sigmoids and maxima
    that autograd would record. Where blocks
    tie, the first takes the whole gradient (autograd's ``maximum`` would split it; both are
    valid subgradients). ``tests/test_model.py`` checks it against autograd."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, wx: torch.Tensor, s: torch.Tensor,  # noqa: D102
                bias: torch.Tensor) -> torch.Tensor:
        out, chosen = weighted_block_max(x, wx, s, bias, track=True)
        ctx.save_for_backward(x, wx, s, bias, chosen)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        x, wx, s, bias, chosen = ctx.saved_tensors
        k = s.shape[0]
        height, width = x.shape[-2:]
        h, w = grad.shape[-2:]
        # flat position in x (and W x) of each output's chosen block: the output's own
        # position in the map plus the block's offset
        shift = torch.tensor([dy * width + dx for dy, dx in _offsets(k)], device=x.device)
        where = torch.arange(x.numel(), device=x.device).view(x.shape)[..., :h, :w] + shift[chosen.long()]
        x_q, wx_q = x.take(where), wx.take(where)
        s_q = s.flatten()[chosen.long()]
        gate = torch.sigmoid(wx_q * s_q + bias.view(1, -1, 1, 1))
        d_s_direct = grad * x_q * gate  # d out / d s_q through the weighting of x_q
        d_logit = d_s_direct * s_q * (1 - gate)
        d_s = torch.zeros(k * k, dtype=grad.dtype, device=grad.device).index_add_(
            0, chosen.flatten().long(), (d_s_direct + d_logit * wx_q).flatten())
        flat = where.flatten()
        grad_x = torch.zeros(x.numel(), dtype=x.dtype, device=x.device).index_add_(
            0, flat, (grad * s_q * gate).flatten())
        grad_wx = torch.zeros(x.numel(), dtype=x.dtype, device=x.device).index_add_(
            0, flat, (d_logit * s_q).flatten())
        return grad_x.view(x.shape), grad_wx.view(x.shape), d_s.view(k, k), d_logit.sum((0, 2, 3))


class DilationRefiner(nn.Module):
    """The refiner of model files before format 3 (``refiner="dilation"``): grey-scale
    dilation by one learnable structuring element (x(p + q) + sigmoid(SE_q), max over q),
    applied ``depth`` times in a row, each step gated by a 1x1 convolution + sigmoid, the
    gated steps merged by an element-wise max. Kept so those files still load."""

    def __init__(self, channels: int = 256, size: int = 3, depth: int = 2) -> None:
        super().__init__()
        if size % 2 == 0:
            raise ValueError("the structuring element side must be odd")
        self.size = size
        self.structuring = nn.Parameter(torch.zeros(size, size))
        self.attention = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(depth))
        self.radius = depth * (size // 2)

    def elements(self) -> list[list[list[float]]]:
        """The structuring element added by the dilation, 0..1 (for the training report)."""
        return [torch.sigmoid(self.structuring.detach()).cpu().tolist()]

    def dilate(self, x: torch.Tensor) -> torch.Tensor:
        """One unpadded grey-scale dilation: max over the element of x(p + q) + s(q)."""
        s = torch.sigmoid(self.structuring)
        k = self.size
        h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
        out = None
        for dy in range(k):
            for dx in range(k):
                term = x[..., dy:dy + h, dx:dx + w] + s[dy, dx]
                out = term if out is None else _maximum(out, term)
        assert out is not None  # the element has at least one cell
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dilate and gate ``depth`` times; the element-wise maximum of the gated steps, cropped alike."""
        if not self.attention:  # depth 0: no refiner (the ablation)
            return x
        blocks = []
        for gate in self.attention:
            x = self.dilate(x)
            g = torch.sigmoid(gate(x))
            blocks.append(x * g if torch.is_grad_enabled() else g.mul_(x))
        h, w = blocks[-1].shape[-2:]
        merged = None
        for b in blocks:
            oy, ox = (b.shape[-2] - h) // 2, (b.shape[-1] - w) // 2
            b = b[..., oy:oy + h, ox:ox + w]
            merged = b if merged is None else _maximum(merged, b)
        assert merged is not None  # depth >= 1 here
        return merged


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum; written into ``a`` when no gradient is recorded (inference
    keeps one feature map instead of one per step)."""
    return torch.maximum(a, b) if torch.is_grad_enabled() else torch.maximum(a, b, out=a)


class SpatialExtractor(nn.Module):
    """SpaFE: unpadded 3x3 convolution 256 -> 64, BatchNorm, ReLU."""

    def __init__(self, channels: int = 256, out: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out, 3)
        self.bn = nn.BatchNorm2d(out)
        self.radius = conv_radius(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, channels, H, W) -> (N, out, H - 2, W - 2)."""
        return F.relu(self.bn(self.conv(x)))


def spectral_aware_pool(features: torch.Tensor, logits: torch.Tensor, patch: int) -> torch.Tensor:
    """SAP: at every pixel, the mean of the class logits over the ``patch`` x ``patch``
    neighbourhood weighted by the cosine similarity of each neighbour's spectral feature to
    the centre pixel's (negative similarities count as 0).

    ``features`` [B, C, H, W] and ``logits`` [B, K, H, W] are aligned; the result is
    [B, K, H - patch + 1, W - patch + 1]. On a patch-sized input it is the pooled logits of
    the window; on a tile it is that, for every pixel at once.
    """
    unit = F.normalize(features, dim=1, eps=1e-8)
    h, w = logits.shape[-2] - patch + 1, logits.shape[-1] - patch + 1
    p = patch // 2
    if h == 1 and w == 1:  # one window (training): the whole neighbourhood at once
        weight = (unit * unit[..., p:p + 1, p:p + 1]).sum(1, keepdim=True).clamp_min(0)
        return (weight * logits).sum((-2, -1), keepdim=True) / (weight.sum((-2, -1), keepdim=True) + 1e-6)
    num = torch.zeros(logits.shape[0], logits.shape[1], h, w, dtype=logits.dtype, device=logits.device)
    den = torch.zeros(logits.shape[0], 1, h, w, dtype=logits.dtype, device=logits.device)
    # on a CPU, strips of SAP_STRIP output rows: a neighbour's product with the centre
    # features then stays in cache (the same arithmetic, pixel by pixel)
    strip = SAP_STRIP if features.device.type == "cpu" else h
    for y0 in range(0, h, strip):
        y1 = min(h, y0 + strip)
        centre = unit[..., p + y0:p + y1, p:p + w]
        num_rows, den_rows = num[..., y0:y1, :], den[..., y0:y1, :]
        for dy in range(patch):
            for dx in range(patch):
                weight = (unit[..., y0 + dy:y1 + dy, dx:dx + w] * centre).sum(1, keepdim=True).clamp_min_(0)
                num_rows.addcmul_(weight, logits[..., y0 + dy:y1 + dy, dx:dx + w])
                den_rows.add_(weight)
    return num / (den + 1e-6)


SAP_STRIP = 16  # output rows per strip of SAP's dense form on a CPU
