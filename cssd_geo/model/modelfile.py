"""The model file: safetensors weights plus JSON metadata. Loading never runs code."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch

from ..classes import classes_from_json, classes_to_json
from ..errors import CssdError
from ..paths import publish
from .cssd import CSSD

FORMAT = "cssd-geo-model"
FORMAT_VERSION = 1
_KEY = "cssd_geo"


def save_model(model: CSSD, path: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Write weights and metadata to ``path`` atomically (temporary file, then rename).

    ``metadata`` holds what travels with the model besides the architecture: band names and
    wavelengths, training pixels, scene CRS/transform, package version.
    """
    from safetensors.torch import save_file

    from .. import __version__

    path = os.fspath(path)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
        "architecture": {"bands": model.bands, "n_classes": model.n_classes, "patch": model.patch,
                         "se_size": model.se_size, "se_depth": model.se_depth,
                         "tau": model.tau, "eps": model.eps, "pooling": model.pooling},
        "radius": model.radius, "window": model.window, "classes": json.loads(classes_to_json(model.classes)),
        **metadata,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".cssd-partial-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_KEY: json.dumps(header)})
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    if header.get("format_version") != FORMAT_VERSION:
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
    arch = header["architecture"]
    model = CSSD(arch["bands"], arch["n_classes"], patch=arch["patch"], se_size=arch["se_size"],
                 se_depth=arch["se_depth"], tau=arch["tau"], eps=arch["eps"],
                 classes=classes_from_json(json.dumps(header["classes"])), pooling=arch.get("pooling", "sap"))
    try:
        model.load_state_dict(load_file(os.fspath(path), device="cpu"), strict=True)
    except RuntimeError as exc:
        raise CssdError(f"{path}: the weights do not match the stored architecture ({str(exc).splitlines()[0]}); "
                        "the file is damaged, retrain the model") from exc
    model.metadata = header
    return model.to(device).eval()
