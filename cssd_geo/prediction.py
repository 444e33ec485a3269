"""A prediction run: the scene as a Dask-chunked array, each chunk computed with the model's
halo (:mod:`cssd_geo.blocks`, :mod:`cssd_geo.tiling`), streamed by a :class:`~cssd_geo.runner.Runner`
into the writers of the output layers (:mod:`cssd_geo.io.writers`), all outputs published
together at the end (:mod:`cssd_geo.outputs`)."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr

from .bands import match_bands, prepare
from .blocks import BlockJob, Layer, block_outputs, default_chunk, predict_block
from .classes import classes_to_json
from .config import PredictConfig
from .device import describe_device, resolve_device
from .errors import CssdError, reading
from .io.scene import open_scene, scene_grid, scene_nodata
from .io.writers import (
    GeoTiffMaps,
    MapWriter,
    ZarrMapWriter,
    decode_probabilities,
    map_encoding,
    side_outputs,
    write_quicklook,
)
from .masks import scene_mask
from .model import CSSD, load_model
from .outputs import OutputSet, check_output
from .progress import Progress
from .resume import ResumeState, file_digest
from .runner import Runner


@dataclass
class PredictResult:
    """What a prediction run produced."""

    map_path: str
    pixels: int
    seconds: float
    chunk: int
    extra_outputs: list[str] = field(default_factory=list)


def predict(model: str | os.PathLike[str] | CSSD, scene: str | os.PathLike[str] | xr.DataArray,
            output: str | os.PathLike[str], config: PredictConfig | None = None,
            progress: Progress | None = None) -> PredictResult:
    """Write the class map of ``scene`` predicted by ``model`` to ``output``: a GeoTIFF
    (``.tif``; ``config.cog`` for a Cloud-Optimized one) or a Zarr store (``.zarr``), with
    the side outputs ``config`` asks for; all of them or, on a failure, none."""
    config = config or PredictConfig()
    progress = progress or Progress()
    config.validate()
    names = _Names(model, scene, os.fspath(output))
    layers = _layers(config)
    extra = side_outputs(names.output, layers) if not names.zarr else {}
    _check_request(names, config, isinstance(model, CSSD), extra)
    device = resolve_device(config.device) if not config.scheduler else None
    net = model if isinstance(model, CSSD) else load_model(model)
    raw = scene if isinstance(scene, xr.DataArray) else open_scene(scene)
    lazy = _lazy_layers(net, raw, config, layers, device, names)
    grid, chunk, arrays, map_nodata = lazy.grid, lazy.chunk, lazy.arrays, lazy.map_nodata
    runner = Runner(progress, predict_block.__name__, device, config.scheduler, model_file=lazy.model_file)
    n_chunks = arrays["classes"].numblocks[0] * arrays["classes"].numblocks[1]
    start = time.perf_counter()
    state = None
    if config.resume:  # every chunk into its own file first, then the outputs from them (one thread)
        state = ResumeState(names.output, _resume_request(names, config, layers, chunk, device, raw))
        done = sum(state.done(layers, r, c) for r in np.cumsum((0,) + arrays["classes"].chunks[0][:-1])
                   for c in np.cumsum((0,) + arrays["classes"].chunks[1][:-1]))
        if done:
            progress.message(f"resuming: {done} of {n_chunks} chunks were done by an earlier run")
        progress.stage("predict", n_chunks)
        runner.store([arrays[n] for n in layers], [state.target(n) for n in layers],
                     skip=lambda r, c: state.done(layers, r, c))
        arrays = {n: state.saved(n, arrays[n]) for n in layers}
        runner = Runner(progress, "load_chunk", None, None, threads=1)
        progress.stage("writing", n_chunks)
    else:
        progress.stage("predict", runner.steps(n_chunks, len(arrays)))
    counter = _ValidPixels(map_nodata, names.scene)
    with OutputSet() as outputs:
        writer: MapWriter = ZarrMapWriter(names.output, grid, net.classes, map_nodata, arrays, outputs) \
            if names.zarr else GeoTiffMaps(names.output, grid, net.classes, layers, outputs,
                                           tags={"CSSD_MODEL": os.path.basename(names.model)}, cog=config.cog)
        with reading(names.scene), writer:
            targets = {name: counter.wrap(t) if name == "classes" else t for name, t in writer.targets.items()}
            runner.store([arrays[n] for n in layers], [targets[n] for n in layers])
            counter.check()
        if config.quicklook:
            write_quicklook(writer.readable_map, config.quicklook, outputs, name=names.output)
    if state is not None:
        state.remove()
    seconds = time.perf_counter() - start
    where = f"; device: {describe_device(device, config.device)}" if device is not None else ""
    progress.message(f"map written to {names.output} ({grid.width} x {grid.height} px, chunk {chunk}, "
                     f"{seconds:.1f} s{where})")
    if config.quicklook:
        progress.message(f"quicklook written to {config.quicklook}")
    return PredictResult(names.output, grid.width * grid.height, seconds, chunk, list(extra.values()))


def _resume_request(names: _Names, config: PredictConfig, layers: tuple[Layer, ...], chunk: int, device: Any,
                    scene: xr.DataArray) -> dict[str, Any]:
    """What a resumable run's chunks depend on: an earlier run's chunks are reused only when
    all of it is the same."""
    if names.model == "(in memory)" or isinstance(names.scene, str) and not os.path.exists(names.scene):
        raise CssdError("--resume needs the model and the scene as files (their content identifies the run)")
    stat = os.stat(names.scene)
    return {"model_sha256": file_digest(names.model), "scene": os.path.abspath(names.scene),
            "scene_size": stat.st_size, "scene_mtime": stat.st_mtime, "layers": list(layers), "chunk": chunk,
            "mask": config.mask, "product_masks": config.product_masks, "precision": config.precision,
            "tta": config.tta, "device": getattr(device, "type", str(device)), "shape": list(scene.shape)}


@dataclass
class _Lazy:
    """A prediction before anything is computed: the prepared scene, its grid, the chunk side,
    the lazy array of each layer (as stored: class ids, probabilities as uint8) and the map's nodata."""

    scene: xr.DataArray
    grid: Any
    chunk: int
    arrays: dict[str, Any]
    map_nodata: int
    model_file: tuple[str, bytes] | None = None  # a cluster run's model file (sha256, bytes) for the workers


def _lazy_layers(net: CSSD, raw: xr.DataArray, config: PredictConfig, layers: tuple[Layer, ...],
                 device: Any, names: _Names | _ArrayNames) -> _Lazy:
    """The scene's bands matched to the model, its masks applied, and the engine's lazy output
    layers over it (``device`` None: a cluster run, whose workers load the model file)."""
    if not isinstance(raw.data, dsa.Array):  # an in-memory scene: one chunk, which the engine splits
        raw = raw.chunk()
    bands = match_bands(raw, net.metadata, net.bands, names.scene, names.model)
    da = prepare(raw, bands, scene_mask(raw, config.mask, config.product_masks))
    chunk = config.chunk or default_chunk(net, device=device)
    dtype, map_nodata = map_encoding(net.classes)
    cluster_file: tuple[str, bytes] | None = None
    if device is None:  # a cluster: the model file travels to the workers, each resolves the device
        with reading(names.model):
            data = Path(names.model).read_bytes()
        cluster_file = (hashlib.sha256(data).hexdigest(), data)
        job_model, job_device = None, config.device
    else:
        job_model, job_device = net.to(device).eval(), str(device)
        if config.precision != "fp32" and device.type != "cuda":
            raise CssdError(f"--precision {config.precision}: reduced precision runs on CUDA only, and this run "
                            f"computes on the CPU; leave --precision out (fp32), or predict on a GPU (--device cuda)")
    job = BlockJob(job_model, job_device, config.precision, scene_nodata(da), layers,
                   tuple(c.id for c in net.classes), map_nodata, config.tta, cluster_file and cluster_file[0])
    arrays = _split_layers(block_outputs(da, net, job, chunk), layers, net.n_classes, dtype)
    return _Lazy(da, scene_grid(da), chunk, arrays, map_nodata, cluster_file)


@dataclass
class _ArrayNames:
    """How predict_array names its model and scene in messages."""

    model: str
    scene: str


def predict_array(model: str | os.PathLike[str] | CSSD, scene: xr.DataArray,
                  config: PredictConfig | None = None) -> xr.Dataset:
    """The lazy prediction of a scene DataArray (band, y, x; numpy- or dask-backed, its CRS and
    transform as rioxarray keeps them): a Dataset with ``classes`` (the class ids; the map's
    nodata value, in ``classes.rio.nodata``, where a pixel has no class) and, when ``config``
    asks, ``probabilities`` (class, y, x) and ``confidence`` (0..1; NaN where nodata), with the
    scene's CRS and transform and the class table in ``attrs["classes"]``. Nothing is computed
    until the result is (``.compute()``, ``.to_zarr()``, ``.rio.to_raster()``, on any Dask
    scheduler); :func:`predict` writes the same arrays."""
    config = config or PredictConfig()
    config.validate()
    if config.scheduler:
        raise CssdError(f"--scheduler {config.scheduler}: predict_array is lazy; compute its result on your own "
                        "Dask client instead")
    if not isinstance(scene, xr.DataArray):
        raise CssdError(f"predict_array takes an xarray DataArray (band, y, x), not {type(scene).__name__}; "
                        "open a file with cssd_geo.open_scene or use predict()")
    net = model if isinstance(model, CSSD) else load_model(model)
    names = _ArrayNames("(in memory)" if isinstance(model, CSSD) else os.fspath(model),
                        str(scene.attrs.get("source", "scene")))
    lazy = _lazy_layers(net, scene, config, _layers(config), resolve_device(config.device), names)
    coords = {d: lazy.scene.coords[d] for d in ("y", "x") if d in lazy.scene.coords}
    classes = xr.DataArray(lazy.arrays["classes"], dims=("y", "x"), coords=coords, name="classes")
    variables: dict[str, xr.DataArray] = {"classes": classes.rio.write_nodata(lazy.map_nodata)}
    if "probabilities" in lazy.arrays:
        variables["probabilities"] = xr.DataArray(decode_probabilities(lazy.arrays["probabilities"]),
                                                  dims=("class", "y", "x"),
                                                  coords={"class": [c.id for c in net.classes], **coords})
    if "confidence" in lazy.arrays:
        variables["confidence"] = xr.DataArray(decode_probabilities(lazy.arrays["confidence"]), dims=("y", "x"),
                                               coords=coords)
    out = xr.Dataset(variables, attrs={"classes": classes_to_json(net.classes)})
    return out.rio.write_crs(lazy.grid.crs).rio.write_transform(lazy.grid.transform)


class _Names:
    """How a run names its model, scene and output in messages, and the output's kind."""

    def __init__(self, model: str | os.PathLike[str] | CSSD, scene: str | os.PathLike[str] | xr.DataArray,
                 output: str) -> None:
        self.model = os.fspath(model) if not isinstance(model, CSSD) else "(in memory)"
        self.scene = os.fspath(scene) if not isinstance(scene, xr.DataArray) else scene.attrs.get("source", "scene")
        self.output = output
        ext = os.path.splitext(output.rstrip("/"))[1].lower()
        if ext not in (".tif", ".tiff", ".zarr"):
            raise CssdError(f"{output}: give an output name ending in .tif (GeoTIFF) or .zarr (Zarr store)")
        self.zarr = ext == ".zarr"


def _check_request(names: _Names, config: PredictConfig, in_memory: bool, extra: dict[str, str]) -> None:
    """Refuse, before any work, a request that cannot be written."""
    if names.zarr and config.cog:
        raise CssdError(f"{names.output}: --cog makes a GeoTIFF; drop it or write a .tif")
    for path in (names.output, *extra.values(), *([config.quicklook] if config.quicklook else [])):
        check_output(path, config.overwrite, inputs=(names.scene, names.model))
    if config.scheduler and in_memory:
        raise CssdError("a cluster run loads the model on each worker: pass the model file path")


def _layers(config: PredictConfig) -> tuple[Layer, ...]:
    """The output layers ``config`` asks for, in the order a block returns them."""
    layers: tuple[Layer, ...] = ("classes",)
    if config.probabilities:
        layers += ("probabilities",)
    if config.confidence:
        layers += ("confidence",)
    return layers


def _split_layers(stack: Any, layers: tuple[Layer, ...], n_classes: int, map_dtype: str) -> dict[str, Any]:
    """The lazy array of each layer, in its stored dtype, from the stacked block outputs."""
    arrays = {"classes": stack[0].astype(map_dtype)}
    if "probabilities" in layers:
        arrays["probabilities"] = stack[1:1 + n_classes].astype(np.uint8)
    if "confidence" in layers:
        arrays["confidence"] = stack[-1].astype(np.uint8)
    return arrays


class _ValidPixels:
    """Counts the mapped (not nodata) pixels written through a class map target."""

    def __init__(self, nodata: int, scene_name: str) -> None:
        self.nodata, self.scene_name, self.count, self._lock = nodata, scene_name, 0, threading.Lock()

    def wrap(self, target: Any) -> _CountingTarget:
        """``target`` (a block writer's ``target[key] = block``) that also counts the block's valid pixels."""
        return _CountingTarget(self, target)

    def add(self, block: np.ndarray) -> None:
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

    def __init__(self, counter: _ValidPixels, target: Any) -> None:
        self.counter, self.target = counter, target

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.counter.add(block)
        self.target[key] = block
