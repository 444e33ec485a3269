"""What runs on one chunk of a prediction: the model over the chunk and its halo, turned into
the requested output layers. Small and picklable, so cluster workers run it too."""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Literal

import dask
import dask.array as dsa
import numpy as np
import torch
import xarray as xr

from .device import resolve_device
from .io.scene import mask_invalid, scene_nodata
from .io.writers import encode_probabilities
from .model import CSSD, load_model
from .tiling import CHUNK_MEMORY, View, chunk_side, dihedral_views, map_with_halo

Layer = Literal["classes", "probabilities", "confidence", "logits"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class BlockJob:
    """Everything a chunk task needs. ``model`` is the module itself (local runs) or None
    (cluster runs: ``model_digest`` names the model file, whose bytes reach each worker once,
    see :func:`register_model_file`, and which each worker process loads once). ``device`` may
    be ``"auto"``, resolved on the worker. ``tta``: average the class probabilities over the 8
    dihedral views of each window (:func:`view_probabilities`)."""

    model: CSSD | None
    device: str
    precision: str
    nodata: float | None
    outputs: tuple[Layer, ...]
    lookup: tuple[int, ...]  # class id of each logit
    map_nodata: int
    tta: bool = False
    model_digest: str | None = None  # sha256 of the model file (cluster runs)

    def bands_out(self, n_classes: int) -> int:
        """Rows of the array a block task returns."""
        sizes = {"classes": 1, "probabilities": n_classes, "confidence": 1, "logits": n_classes}
        return sum(sizes[o] for o in self.outputs)


_MODEL_FILES: dict[str, bytes] = {}  # model files that reached this process, by sha256
_WORKER_MODELS: dict[tuple[str, str], tuple[CSSD, torch.device]] = {}
_MODEL_LOCK = threading.Lock()


def register_model_file(digest: str, data: bytes) -> None:
    """Make a model file's bytes known to this process (a cluster worker) under its sha256."""
    with _MODEL_LOCK:
        _MODEL_FILES[digest] = data


def job_model(job: BlockJob) -> tuple[CSSD, torch.device]:
    """The job's module and the device it runs on: the job's own module, or the registered
    model file loaded once per process (and per device) on the job's device, ``auto`` resolved
    here (so each worker of a cluster uses its own GPU when it has one)."""
    if job.model is not None:
        return job.model, torch.device(job.device)
    key = (str(job.model_digest), job.device)
    with _MODEL_LOCK:
        if key not in _WORKER_MODELS:
            data = _MODEL_FILES.get(str(job.model_digest))
            if data is None:
                raise RuntimeError(f"model {job.model_digest} has not reached this worker")
            device = resolve_device(job.device)
            with tempfile.TemporaryDirectory(prefix="cssd-model-") as folder:
                path = os.path.join(folder, "model.cssd")  # load_model reads the header from a file
                with open(path, "wb") as f:
                    f.write(data)
                _WORKER_MODELS[key] = (load_model(path, device=device), device)
        return _WORKER_MODELS[key]


def default_chunk(model: CSSD, device: torch.device | None = None, memory: int | None = None) -> int:
    """Chunk side for ``model`` on ``device`` (see :func:`cssd_geo.tiling.chunk_side`).

    ``memory`` defaults to ``CHUNK_MEMORY`` on a CPU, where small chunks are also the fast
    ones (their feature maps stay in cache: on a 200-band scene, 2 cores, chunk 128 ran at
    twice the speed of 256 with 57 % of its memory), and to a quarter of the free memory of
    a GPU (two chunks in flight, room for the allocator), where large chunks keep it busy.
    """
    if memory is None:
        memory = CHUNK_MEMORY
        if device is not None and device.type == "cuda":
            memory = torch.cuda.mem_get_info(device)[0] // 4
    return chunk_side(model.floats_per_pixel(), model.reach, memory)


@torch.no_grad()
def dense_logits(model: CSSD, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Dense logits of a tile with its halo; on CUDA out of memory, split the tile in two
    (each with its halo) and retry."""
    try:
        if precision != "fp32" and x.device.type == "cuda":
            with torch.autocast("cuda", dtype=_DTYPES[precision]):
                return model.dense_logits(x).float()
        return model.dense_logits(x)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        h, rows = model.reach, x.shape[-2] - 2 * model.reach
        if rows < 2:
            raise
        mid = rows // 2
        top = dense_logits(model, x[..., : mid + 2 * h, :], precision)
        bottom = dense_logits(model, x[..., mid:, :], precision)
        return torch.cat([top, bottom], dim=-2)


@torch.no_grad()
def view_probabilities(model: CSSD, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Test-time augmentation: class probabilities [B, K, H - 2 reach, W - 2 reach] of a tile
    with its halo, each pixel's the mean of the softmax over the 8 views of its window
    (:func:`cssd_geo.tiling.dihedral_views`): the whole tile is turned or mirrored, run
    densely and turned back, so this tiles exactly, at 8 times the compute."""
    def probabilities(view: View) -> torch.Tensor:
        return torch.softmax(view.invert(dense_logits(model, view.apply(x), precision)).float(), dim=1)

    first, *rest = dihedral_views()
    total = probabilities(first)
    for view in rest:  # one view at a time: the memory of a plain run
        total.add_(probabilities(view))
    return total.div_(1 + len(rest))


def predict_block(block: np.ndarray, job: BlockJob) -> np.ndarray:
    """Outputs of one chunk: ``block`` is (band, rows + 2 reach, cols + 2 reach) raw values;
    the result is float32 (output band, rows, cols) in the order of ``job.outputs``. With
    ``job.tta`` the probabilities are the mean over the views and the logits their log."""
    model, device = job_model(job)
    h = model.reach
    x = mask_invalid(np.array(block, dtype=np.float32), job.nodata)
    valid = np.isfinite(x[0, h:x.shape[1] - h, h:x.shape[2] - h])
    tensor = torch.from_numpy(x).unsqueeze(0)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    probabilities: torch.Tensor | None = None
    if job.tta:
        probabilities = view_probabilities(model, tensor, job.precision)[0]
        logits = torch.log(probabilities)
    else:
        logits = dense_logits(model, tensor, job.precision)[0]
    out = []
    for name in job.outputs:
        if name == "logits":
            out.append(logits.cpu().numpy())
        elif name == "classes":
            scores = probabilities if probabilities is not None else logits
            ids = np.asarray(job.lookup)[scores.argmax(0).cpu().numpy()]
            out.append(np.where(valid, ids, job.map_nodata)[None].astype(np.float32))
        else:
            p = probabilities if probabilities is not None else torch.softmax(logits.float(), dim=0)
            p = p if name == "probabilities" else p.max(0, keepdim=True).values
            out.append(encode_probabilities(p.cpu().numpy(), valid).astype(np.float32))
    return np.concatenate(out, axis=0)


def block_outputs(scene: xr.DataArray, model: CSSD, job: BlockJob, chunk: int) -> dsa.Array:
    """The lazy (output band, y, x) array of ``job.outputs`` over the whole scene in
    ``chunk`` x ``chunk`` chunks, each computed with the model's halo (``model.reach``)."""
    data = scene.data if isinstance(scene.data, dsa.Array) else dsa.from_array(scene.data)
    return map_with_halo(predict_block, data, model.reach, chunk, job.bands_out(model.n_classes), job=job)


def predict_logits(model: CSSD, scene: xr.DataArray, chunk: int = 256, device: str = "cpu", *,
                   tta: bool = False) -> np.ndarray:
    """Logits (K, y, x) of every pixel of a (small) scene through the engine; with ``tta``
    the log of the probabilities averaged over the 8 views (their softmax is that mean)."""
    job = BlockJob(model.to(device).eval(), device, "fp32", scene_nodata(scene), ("logits",),
                   tuple(c.id for c in model.classes) or tuple(range(model.n_classes)), 0, tta)
    with dask.config.set(scheduler="threads"):
        return np.asarray(block_outputs(scene, model, job, chunk).compute())
