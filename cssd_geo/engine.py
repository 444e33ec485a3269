"""Prediction engine: the scene as a Dask-chunked array, each chunk read with the model's halo
(``model.reach``; scene borders reflect-padded as in training), the model run densely over it,
the halo trimmed and the chunk's core emitted, streamed to the writers.

Runs on the local threaded scheduler (CPU or CUDA) or on a Dask distributed cluster, where
each worker loads the model file once and only the small class blocks travel back.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field

import dask
import dask.array as dsa
import numpy as np
import torch
import xarray as xr

from .config import PredictConfig
from .device import resolve_device
from .errors import CssdError, reading
from .io.scene import band_names, band_wavelengths, mask_invalid, open_scene, scene_grid, scene_nodata
from .io.writers import (ClassMapWriter, ProbabilityWriter, ZarrMapWriter, encode_probabilities, map_encoding,
                         write_quicklook)
from .model import CSSD, load_model
from .paths import check_output
from .progress import Progress

WAVELENGTH_TOLERANCE_NM = 0.5
CHUNK_MEMORY = 128 * 2 ** 20  # bytes one chunk's forward pass may take; sets the default --chunk
BATCH_PER_THREAD = 4  # chunks computed per scheduler call and thread (see _Runner.store)
_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PredictResult:
    """What a prediction run produced."""

    map_path: str
    pixels: int
    seconds: float
    chunk: int
    extra_outputs: list[str] = field(default_factory=list)


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


def default_chunk(model: CSSD, memory: int | None = None, device: torch.device | None = None) -> int:
    """Chunk side whose forward pass fits in ``memory`` bytes: about (bands + 4 x 256 + 2 x 64)
    float32 values per pixel of chunk plus halo; a multiple of 32 between 64 and 2048.

    ``memory`` defaults to ``CHUNK_MEMORY`` on a CPU, where small chunks are also the fast
    ones (their feature maps stay in cache: on a 200-band scene, 2 cores, chunk 128 ran at
    twice the speed of 256 with 57 % of its memory), and to a quarter of the free memory of
    a GPU (two chunks in flight, room for the allocator), where large chunks keep it busy.
    """
    if memory is None:
        memory = CHUNK_MEMORY
        if device is not None and device.type == "cuda":
            memory = torch.cuda.mem_get_info(device)[0] // 4
    per_pixel = 4 * (model.bands + 4 * 256 + 2 * 64)
    side = int(math.sqrt(memory / per_pixel)) - 2 * model.reach
    return int(min(2048, max(64, side // 32 * 32)))


# --- what runs on a block -------------------------------------------------------------------

@dataclass(frozen=True)
class BlockJob:
    """Everything a chunk task needs; small and picklable for cluster workers. ``model`` is
    the module itself (local runs) or the model file path (cluster runs, loaded once per
    worker)."""

    model: object
    device: str
    precision: str
    nodata: float | None
    outputs: tuple[str, ...]  # of "classes", "probabilities", "confidence", "logits"
    lookup: tuple[int, ...]  # class id of each logit
    map_nodata: int


_WORKER_MODELS: dict = {}
_MODEL_LOCK = threading.Lock()


def _job_model(job: BlockJob) -> CSSD:
    if isinstance(job.model, CSSD):
        return job.model
    key = (job.model, os.path.getmtime(job.model), job.device)
    with _MODEL_LOCK:
        if key not in _WORKER_MODELS:
            _WORKER_MODELS[key] = load_model(job.model, device=job.device)
        return _WORKER_MODELS[key]


def output_bands(job: BlockJob, n_classes: int) -> int:
    """Rows of the array a block task returns for ``job.outputs``."""
    sizes = {"classes": 1, "probabilities": n_classes, "confidence": 1, "logits": n_classes}
    return sum(sizes[o] for o in job.outputs)


@torch.no_grad()
def _logits(model: CSSD, x: torch.Tensor, precision: str) -> torch.Tensor:
    """Dense logits; on CUDA out of memory, split the tile in two (with its halo) and retry."""
    try:
        if precision != "fp32" and x.device.type == "cuda":
            with torch.autocast("cuda", dtype=_PRECISIONS[precision]):
                return model.dense_logits(x).float()
        return model.dense_logits(x)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        h, rows = model.reach, x.shape[-2] - 2 * model.reach
        if rows < 2:
            raise
        mid = rows // 2
        top = _logits(model, x[..., : mid + 2 * h, :], precision)
        bottom = _logits(model, x[..., mid:, :], precision)
        return torch.cat([top, bottom], dim=-2)


def predict_block(block: np.ndarray, job: BlockJob) -> np.ndarray:
    """Outputs of one chunk: ``block`` is (band, rows + 2 reach, cols + 2 reach) raw values;
    the result is float32 (output band, rows, cols) in the order of ``job.outputs``."""
    model = _job_model(job)
    h = model.reach
    x = mask_invalid(np.array(block, dtype=np.float32), job.nodata)
    valid = np.isfinite(x[0, h:x.shape[1] - h, h:x.shape[2] - h])
    tensor = torch.from_numpy(x).unsqueeze(0)
    device = torch.device(job.device)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    logits = _logits(model, tensor, job.precision)[0]
    out = []
    for name in job.outputs:
        if name == "logits":
            out.append(logits.cpu().numpy())
        elif name == "classes":
            ids = np.asarray(job.lookup)[logits.argmax(0).cpu().numpy()]
            out.append(np.where(valid, ids, job.map_nodata)[None].astype(np.float32))
        else:
            p = torch.softmax(logits.float(), dim=0)
            p = p if name == "probabilities" else p.max(0, keepdim=True).values
            out.append(encode_probabilities(p.cpu().numpy(), valid).astype(np.float32))
    return np.concatenate(out, axis=0)


def reflect_pad(data: dsa.Array, h: int) -> dsa.Array:
    """Pad the two spatial axes of (band, y, x) by ``h`` pixels, reflected about the edge
    pixels as :func:`cssd_geo.io.scene.reflect_index` does in training: in steps of at most
    size - 1 (a reflection repeats on scenes smaller than the halo); a 1-pixel axis repeats
    its pixel."""
    for axis in (1, 2):
        widths = [(0, 0)] * 3
        if data.shape[axis] == 1:
            widths[axis] = (h, h)
            data = dsa.pad(data, widths, mode="edge")
            continue
        left = right = h
        while left or right:
            n = data.shape[axis] - 1
            widths[axis] = (min(left, n), min(right, n))
            data = dsa.pad(data, widths, mode="reflect")
            left, right = left - widths[axis][0], right - widths[axis][1]
    return data


def block_outputs(scene: xr.DataArray, model: CSSD, job: BlockJob, chunk: int) -> dsa.Array:
    """The lazy (output band, y, x) array of ``job.outputs`` over the whole scene, chunked
    ``chunk`` x ``chunk``: each chunk computed from its core plus ``model.reach`` pixels of
    neighbours (reflect padding at scene borders), so the result does not depend on ``chunk``."""
    h = model.reach
    if chunk < h:
        raise CssdError(f"--chunk {chunk}: smaller than the model's halo of {h} pixels; use at least {h}")
    data = scene.data.rechunk((-1, chunk, chunk))
    padded = reflect_pad(data, h)
    # chunks of the padded array: the padding joins the first and last chunk of each axis
    rows, cols = data.chunks[1], data.chunks[2]
    grow = lambda c: (c[0] + 2 * h,) if len(c) == 1 else (c[0] + h, *c[1:-1], c[-1] + h)  # noqa: E731
    padded = padded.rechunk((-1, grow(rows), grow(cols)))
    n_out = output_bands(job, model.n_classes)
    return dsa.map_overlap(predict_block, padded, depth={0: 0, 1: h, 2: h}, boundary="none", trim=False,
                           dtype=np.float32, chunks=((n_out,), rows, cols), job=job,
                           meta=np.empty((0, 0, 0), np.float32))


def predict_logits(model: CSSD, scene: xr.DataArray, chunk: int = 256, device: str = "cpu") -> np.ndarray:
    """Logits (K, y, x) of every pixel of a (small) scene through the engine."""
    job = BlockJob(model.to(device).eval(), device, "fp32", scene_nodata(scene), ("logits",),
                   tuple(c.id for c in model.classes) or tuple(range(model.n_classes)), 0)
    with dask.config.set(scheduler="threads"):
        return block_outputs(scene, model, job, chunk).compute()


# --- running and writing -----------------------------------------------------------------------

class _DaskProgress(dask.callbacks.Callback):
    """Forwards finished chunk tasks of the local scheduler to a Progress; cancels on request."""

    def __init__(self, progress: Progress, name: str) -> None:
        super().__init__()
        self.progress, self.name = progress, name

    def _posttask(self, key, result, dsk, state, worker_id):
        # a chunk's task: named after predict_block, alone or fused with its neighbours in the
        # graph (astype-getitem-...-predict_block-store-map)
        if isinstance(key, tuple) and isinstance(key[0], str) and self.name in key[0]:
            self.progress.advance(1)
        self.progress.check("prediction")


def _outputs_for(config: PredictConfig) -> tuple[str, ...]:
    return ("classes",) + (("probabilities",) if config.probabilities else ()) + \
        (("confidence",) if config.confidence else ())


def side_outputs(output: str, config: PredictConfig) -> dict[str, str]:
    """Paths of the probability and confidence files that go with a GeoTIFF ``output``."""
    stem, ext = os.path.splitext(output)
    paths = {}
    if config.probabilities:
        paths["probabilities"] = f"{stem}_probabilities{ext}"
    if config.confidence:
        paths["confidence"] = f"{stem}_confidence{ext}"
    return paths


def predict(model: str | os.PathLike | CSSD, scene: str | os.PathLike | xr.DataArray, output: str | os.PathLike,
            config: PredictConfig | None = None, progress: Progress | None = None) -> PredictResult:
    """Write the class map of ``scene`` predicted by ``model`` to ``output``: a GeoTIFF
    (``.tif``; ``config.cog`` for a Cloud-Optimized one) or a Zarr store (``.zarr``)."""
    config = config or PredictConfig()
    progress = progress or Progress()
    config.validate()
    device = resolve_device(config.device) if not config.scheduler else None
    model_name = os.fspath(model) if not isinstance(model, CSSD) else "(in memory)"
    scene_name = os.fspath(scene) if not isinstance(scene, xr.DataArray) else scene.attrs.get("source", "scene")
    output = os.fspath(output)
    ext = os.path.splitext(output.rstrip("/"))[1].lower()
    if ext not in (".tif", ".tiff", ".zarr"):
        raise CssdError(f"{output}: give an output name ending in .tif (GeoTIFF) or .zarr (Zarr store)")
    if ext == ".zarr" and config.cog:
        raise CssdError(f"{output}: --cog makes a GeoTIFF; drop it or write a .tif")
    extra = side_outputs(output, config) if ext != ".zarr" else {}
    for path in (output, *extra.values(), *([config.quicklook] if config.quicklook else [])):
        check_output(path, config.overwrite, inputs=(scene_name, model_name))
    if config.scheduler and isinstance(model, CSSD):
        raise CssdError("a cluster run loads the model on each worker: pass the model file path")
    net = model if isinstance(model, CSSD) else load_model(model)
    da = scene if isinstance(scene, xr.DataArray) else open_scene(scene)
    check_compatible(net, da, scene_name, model_name)
    grid = scene_grid(da)
    chunk = config.chunk or default_chunk(net, device=device)
    _, map_nodata = map_encoding(net.classes)
    if config.scheduler:
        job_model, job_device = os.path.abspath(model_name), "cpu" if config.device == "auto" else config.device
    else:
        net = net.to(device).eval()
        job_model, job_device = net, str(device)
    job = BlockJob(job_model, job_device, config.precision, scene_nodata(da), _outputs_for(config),
                   tuple(c.id for c in net.classes), map_nodata)
    stack = block_outputs(da, net, job, chunk)
    layers = {"classes": stack[0]}
    k = net.n_classes
    if config.probabilities:
        layers["probabilities"] = stack[1:1 + k]
    if config.confidence:
        layers["confidence"] = stack[-1]
    dtype, _ = map_encoding(net.classes)
    layers = {name: a.astype(dtype if name == "classes" else np.uint8) for name, a in layers.items()}
    n_chunks = len(stack.chunks[1]) * len(stack.chunks[2])
    progress.stage("predict", n_chunks * (len(layers) if config.scheduler else 1))
    start = time.perf_counter()
    run = _Runner(config, progress, predict_block.__name__, device)
    counter = _ValidPixels(map_nodata, scene_name)
    with reading(scene_name):
        if ext == ".zarr":
            with ZarrMapWriter(output, grid, net.classes, map_nodata, layers) as store:
                run.store(list(layers.values()), [counter.wrap(store.targets[name]) if name == "classes"
                                                  else store.targets[name] for name in layers])
                counter.check()
        else:
            _write_geotiffs(output, extra, layers, grid, net, config, run, model_name, counter)
    seconds = time.perf_counter() - start
    progress.message(f"map written to {output} ({grid.width} x {grid.height} px, chunk {chunk}, {seconds:.1f} s)")
    if config.quicklook:
        write_quicklook(output, config.quicklook)
        progress.message(f"quicklook written to {config.quicklook}")
    return PredictResult(output, grid.width * grid.height, seconds, chunk, list(extra.values()))


class _ValidPixels:
    """Counts the mapped (not nodata) pixels written through a class map target."""

    def __init__(self, nodata: int, scene_name: str) -> None:
        self.nodata, self.scene_name, self.count, self._lock = nodata, scene_name, 0, threading.Lock()

    def wrap(self, target) -> "_CountingTarget":
        """``target`` (a block writer's ``target[key] = block``) that also counts the block's valid pixels."""
        return _CountingTarget(self, target)

    def add(self, block) -> None:
        """Count the valid pixels of one written block (blocks arrive from several threads)."""
        valid = int(np.count_nonzero(np.asarray(block) != self.nodata))
        with self._lock:
            self.count += valid

    def check(self) -> None:
        """Refuse a map without a single classified pixel (raised before the map is kept)."""
        if self.count == 0:
            raise CssdError(f"{self.scene_name}: every pixel is nodata (or NaN/inf in some band), so the map would be "
                            "empty; check the scene's nodata value (e.g. gdal_edit.py -a_nodata)")


class _CountingTarget:
    """A dask.array.store target that counts valid pixels into a :class:`_ValidPixels` then writes."""

    def __init__(self, counter: _ValidPixels, target) -> None:
        self.counter, self.target = counter, target

    def __setitem__(self, key, block) -> None:
        self.counter.add(block)
        self.target[key] = block


def _write_geotiffs(output, extra, layers, grid, net, config, run, model_name, counter) -> None:
    from contextlib import ExitStack

    with ExitStack() as stack:
        targets = {"classes": stack.enter_context(ClassMapWriter(
            output, grid, net.classes, tags={"CSSD_MODEL": os.path.basename(model_name)}, cog=config.cog))}
        if "probabilities" in extra:
            targets["probabilities"] = stack.enter_context(ProbabilityWriter(
                extra["probabilities"], grid, [f"p({c.name})" for c in net.classes], cog=config.cog))
        if "confidence" in extra:
            targets["confidence"] = stack.enter_context(ProbabilityWriter(
                extra["confidence"], grid, ["confidence (max probability)"], cog=config.cog))
        names = list(layers)
        run.store([layers[n] for n in names], [counter.wrap(targets[n]) if n == "classes" else targets[n]
                                               for n in names])
        counter.check()


class _Runner:
    """Computes dask graphs locally (threads, progress, cancel) or on a distributed cluster."""

    def __init__(self, config: PredictConfig, progress: Progress, name: str, device: torch.device | None) -> None:
        self.config, self.progress, self.name, self.device = config, progress, name, device

    def _workers(self) -> int:
        """Dask threads: one per core on a CPU, two (one reading, one computing) on a GPU."""
        return max(1, os.cpu_count() or 1) if self.device is None or self.device.type == "cpu" else 2

    def _local(self):
        workers = self._workers()
        # CPU: one torch thread per dask thread, so chunks run side by side without
        # oversubscribing the cores; reading and writing overlap with compute.
        threads = torch.get_num_threads()
        if self.device is not None and self.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        return workers, threads

    def compute(self, graph) -> None:
        if self.config.scheduler:
            return self._cluster_compute(graph)
        workers, threads = self._local()
        try:
            with dask.config.set(scheduler="threads", num_workers=workers), _DaskProgress(self.progress, self.name):
                dask.compute(graph)
        finally:
            torch.set_num_threads(threads)

    def store(self, sources, targets) -> None:
        """Compute and write the sources a few chunks at a time (a run of chunks along one
        row, four per thread): the scheduler never reads ahead of that run, so memory is
        bounded by the chunk size and the number of threads, whatever the scene size."""
        if self.config.scheduler:
            return self._cluster_store(sources, targets)
        rows, cols = sources[0].chunks[-2:]
        run = min(len(cols), BATCH_PER_THREAD * self._workers())
        row_bounds, col_bounds = np.cumsum((0,) + rows), np.cumsum((0,) + cols)
        for i in range(len(rows)):
            for j in range(0, len(cols), run):
                r0, r1 = int(row_bounds[i]), int(row_bounds[i + 1])
                c0, c1 = int(col_bounds[j]), int(col_bounds[min(j + run, len(cols))])
                part = [s[..., r0:r1, c0:c1] for s in sources]
                regions = [(slice(None),) * (s.ndim - 2) + (slice(r0, r1), slice(c0, c1)) for s in sources]
                self.compute(dsa.store(part, targets, regions=regions, lock=False, compute=False))

    def _client(self):
        from distributed import Client

        try:
            return Client(self.config.scheduler, timeout="30s")
        except OSError as exc:
            raise CssdError(f"--scheduler {self.config.scheduler}: cannot reach the Dask scheduler ({exc}); "
                            "check the address and that the cluster is running") from exc

    def _cluster_compute(self, graph) -> None:
        with self._client() as client:
            client.compute(graph).result()

    def _cluster_store(self, sources, targets) -> None:
        """Blocks are computed on the workers; each finished block comes back and is written here."""
        from distributed import as_completed

        with self._client() as client:
            self.progress.message(f"running on {self.config.scheduler}; Dask dashboard: {client.dashboard_link}")
            blocks, places = [], []
            for source, target in zip(sources, targets):
                for index in np.ndindex(*source.numblocks):
                    blocks.append(source.blocks[index])
                    places.append((target, tuple(slice(sum(c[:i]), sum(c[:i + 1]))
                                                 for c, i in zip(source.chunks, index))))
            futures = client.compute(blocks)
            where = {f.key: p for f, p in zip(futures, places)}
            for future in as_completed(futures):
                self.progress.check("prediction")
                target, key = where[future.key]
                target[key] = future.result()
                self.progress.advance(1)
