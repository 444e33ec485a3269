"""Property-based check of the whole prediction path: on random small scenes, chunk sizes and
nodata masks, the map written by the tiled engine is the per-window model's label at every
valid pixel and nodata exactly where a pixel is nodata or NaN in some band."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import rasterio
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

import cssd_geo
from cssd_geo.classes import make_class_table
from cssd_geo.config import PredictConfig
from cssd_geo.model import CSSD, ModelConfig

NODATA = -9999.0


@st.composite
def scenes(draw):
    height, width = draw(st.integers(2, 22)), draw(st.integers(2, 22))
    bands = draw(st.integers(3, 7))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    cube = rng.normal(1000, 300, (bands, height, width)).astype(np.float32)
    invalid = rng.random((bands, height, width)) < draw(st.sampled_from([0.0, 0.02, 0.2, 1.0]))
    kind = rng.choice(["nodata", "nan", "inf"], size=cube.shape)
    cube[invalid & (kind == "nodata")] = NODATA
    cube[invalid & (kind == "nan")] = np.nan
    cube[invalid & (kind == "inf")] = np.inf
    chunk = draw(st.integers(4, 30))
    patch = draw(st.sampled_from([3, 5]))
    return cube, chunk, patch, seed


def per_window_labels(model: CSSD, cube: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label, top-two logit gap and validity of every pixel, window by window from the
    reflect-padded scene (a pixel invalid in any band is NaN in every band)."""
    valid = (np.isfinite(cube) & (cube != NODATA)).all(axis=0)
    x = np.where(valid[None], cube, np.nan).astype(np.float32)
    h = model.reach
    rows = np.arange(-h, cube.shape[1] + h)
    cols = np.arange(-h, cube.shape[2] + h)
    from cssd_geo.tiling import reflect_index

    padded = x[:, reflect_index(rows, cube.shape[1])][:, :, reflect_index(cols, cube.shape[2])]
    windows = np.stack([padded[:, r:r + model.window, c:c + model.window]
                        for r in range(cube.shape[1]) for c in range(cube.shape[2])])
    with torch.no_grad():
        logits = model(torch.from_numpy(windows)).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    shape = cube.shape[1:]
    return logits.argmax(1).reshape(shape), (top2[:, 1] - top2[:, 0]).reshape(shape), valid


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_engine_equals_per_window_model_and_keeps_nodata(case):
    cube, chunk, patch, seed = case
    bands = cube.shape[0]
    torch.manual_seed(seed)
    model = CSSD(bands, 4, ModelConfig(patch=patch), classes=make_class_table([1, 2, 3, 4], ["a", "b", "c", "d"]))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    model.set_normalisation(np.full(bands, 1000.0), np.full(bands, 300.0))
    model.eval()
    chunk = max(chunk, model.reach)
    with tempfile.TemporaryDirectory() as folder:
        scene = os.path.join(folder, "scene.tif")
        with rasterio.open(scene, "w", driver="GTiff", width=cube.shape[2], height=cube.shape[1], count=bands,
                           dtype="float32", nodata=NODATA, crs="EPSG:32633",
                           transform=from_origin(380000, 5820000, 30, 30)) as ds:
            ds.write(cube)
        labels, gap, valid = per_window_labels(model, cube)
        out = os.path.join(folder, "map.tif")
        if not valid.any():
            try:
                cssd_geo.predict(model, scene, out, PredictConfig(chunk=chunk, device="cpu"))
            except cssd_geo.CssdError as exc:
                assert "every pixel is nodata" in str(exc)
            else:
                raise AssertionError("a scene without a valid pixel must be refused")
            assert os.listdir(folder) == ["scene.tif"]
            return
        cssd_geo.predict(model, scene, out, PredictConfig(chunk=chunk, device="cpu"))
        with rasterio.open(out) as ds:
            mapped = ds.read(1)
            assert ds.nodata == 0
    assert ((mapped == 0) == ~valid).all()  # nodata exactly where the scene has none
    ids = np.array([1, 2, 3, 4])[labels]
    differ = valid & (mapped != ids)
    assert (gap[differ] < 1e-4).all()  # only float ties may differ
