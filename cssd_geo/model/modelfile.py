"""The model file: safetensors weights plus JSON metadata. Loading never runs code."""
from __future__ import annotations

import json
import os
from typing import Any

import torch

from ..classes import classes_from_json, classes_to_json
from ..errors import CssdError, first_line
from ..outputs import OutputSet, output_file
from .cssd import CSSD

FORMAT = "cssd-geo-model"
FORMAT_VERSION = 3  # 3: SpeFR's form is a setting (refiner); 2 (the same layout, dilation SpeFR) and 1
READABLE = (1, 2, FORMAT_VERSION)  # (flat settings) are still read
_KEY = "cssd_geo"


def save_model(model: CSSD, path: str | os.PathLike[str], metadata: dict[str, Any],
               outputs: OutputSet | None = None) -> None:
    """Write weights and metadata to ``path`` through a temporary file: renamed when written,
    or, with ``outputs``, when that set of a run's outputs is published.

    ``metadata`` holds what travels with the model besides the architecture: band names and
    wavelengths, training pixels, scene CRS/transform, training settings.
    """
    from safetensors.torch import save_file

    from .. import __version__

    path = os.fspath(path)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
        "architecture": model.architecture(),
        "radius": model.radius, "window": model.window, "classes": json.loads(classes_to_json(model.classes)),
        **metadata,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with output_file(path, outputs) as tmp:
        save_file(tensors, tmp, metadata={_KEY: json.dumps(header)})


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a model file, checked for format and version."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise CssdError(f"{path}: model file not found; check the path or train one with 'cssd-geo train'")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on foreign files
        raise CssdError(f"{path}: not a cssd-geo model file (it is not in safetensors format; pickles "
                        "are never loaded); give a file written by 'cssd-geo train'") from exc
    try:
        header = json.loads(meta[_KEY])
    except (KeyError, ValueError) as exc:
        raise CssdError(f"{path}: a safetensors file but not a cssd-geo model (no cssd-geo metadata); "
                        "give a file written by 'cssd-geo train'") from exc
    if header.get("format") != FORMAT:
        raise CssdError(f"{path}: not a cssd-geo model file; give a file written by 'cssd-geo train'")
    if header.get("format_version") not in READABLE:
        raise CssdError(f"{path}: model format version {header.get('format_version')} (written by cssd-geo "
                        f"{header.get('package_version')}) is not readable by this version (format "
                        f"{FORMAT_VERSION}); retrain the model or use that cssd-geo version")
    return header


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> CSSD:
    """Load a model file as a :class:`CSSD` in eval mode.

    The module has ``window`` (input side), ``classes`` (class table in logit order),
    ``metadata`` (everything stored with it) and ``forward(x)`` on raw band windows.
    """
    from safetensors.torch import load_file

    header = read_model_metadata(path)
    arch = _architecture(header)
    try:
        model = CSSD(**arch, classes=classes_from_json(json.dumps(header["classes"])))
    except (TypeError, ValueError, CssdError) as exc:
        raise CssdError(f"{path}: the stored architecture is not one this version builds ({first_line(exc)}); "
                        "retrain the model or use the cssd-geo version that wrote it") from exc
    try:
        model.load_state_dict(load_file(os.fspath(path), device="cpu"), strict=True)
    except RuntimeError as exc:
        raise CssdError(f"{path}: the weights do not match the stored architecture ({first_line(exc)}); "
                        "the file is damaged, retrain the model") from exc
    model.metadata = header
    return model.to(device).eval()


def _architecture(header: dict[str, Any]) -> dict[str, Any]:
    """The stored architecture in today's layout: files before format 3 hold the dilation SpeFR."""
    if header["format_version"] == 1:
        return _architecture_v1(header)
    arch = dict(header["architecture"])
    if header["format_version"] == 2:
        arch["config"] = {**arch["config"], "refiner": "dilation"}
    return arch


def _architecture_v1(header: dict[str, Any]) -> dict[str, Any]:
    """The architecture of a format-1 file (flat settings; SpeFR depth named ``se_depth``;
    the auxiliary loss and its use were a training option) in today's layout."""
    flat = dict(header["architecture"])
    config = {"patch": flat["patch"], "se_size": flat["se_size"], "refiner_depth": flat["se_depth"],
              "pooling": flat.get("pooling", "sap"), "tau": flat["tau"], "eps": flat["eps"],
              "auxiliary": (header.get("train_config") or {}).get("auxiliary", True), "refiner": "dilation"}
    return {"bands": flat["bands"], "n_classes": flat["n_classes"], "config": config}
