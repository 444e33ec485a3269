"""The bands a model expects: a scene must give the same bands, in the same order."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .errors import CssdError
from .io.scene import band_names, band_wavelengths
from .model import CSSD

WAVELENGTH_TOLERANCE_NM = 0.5


def check_compatible(model: CSSD, scene: xr.DataArray, scene_name: str, model_name: str) -> None:
    """Refuse a scene whose bands differ from the model's: their count, and their names and
    wavelengths where both the model file and the scene know them."""
    meta = model.metadata
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
        i = next(k for k, (a, b) in enumerate(zip(names_model, names_scene, strict=True)) if a != b)
        raise CssdError(f"{scene_name}: band {i + 1} is named {names_scene[i]!r} but model {model_name} expects "
                        f"{names_model[i]!r}; use a scene with the model's bands in the same order")
