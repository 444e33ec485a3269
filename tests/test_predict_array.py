"""cssd_geo.predict_array: the lazy xarray prediction, for numpy- and dask-backed scenes, with
the scene's CRS and transform, giving the map that predict() writes."""
from __future__ import annotations

import dask.array as dsa
import numpy as np
import pytest
import rasterio

import cssd_geo
from cssd_geo import CssdError, PredictConfig, predict_array
from cssd_geo.cli import main

FAST = ["--epochs", "15", "--shots", "8", "--patch", "5", "--seed", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_and_map(tmp_path_factory):
    from tests.conftest import make_cube, write_scene, write_stripe_labels

    folder = tmp_path_factory.mktemp("array")
    cube = make_cube(36, 42, 12)
    cube[:, 3, 4] = -9999  # a nodata pixel
    scene = write_scene(folder / "scene.tif", cube, nodata=-9999)
    labels = write_stripe_labels(folder / "labels.gpkg", 36, 42)
    model = folder / "model.cssd"
    assert main(["--quiet", "train", scene, "--labels", labels, "-o", str(model), *FAST]) == 0
    assert main(["--quiet", "predict", str(model), scene, "-o", str(folder / "map.tif"), "--probabilities",
                 "--chunk", "16"]) == 0
    return scene, model, folder / "map.tif"


@pytest.mark.parametrize("backing", ["dask", "numpy"])
def test_predict_array_is_lazy_and_gives_predicts_map(model_and_map, backing):
    scene_path, model, map_path = model_and_map
    scene = cssd_geo.open_scene(scene_path)
    if backing == "numpy":
        scene = scene.load()
        assert isinstance(scene.data, np.ndarray)
    result = predict_array(model, scene, PredictConfig(probabilities=True, confidence=True, device="cpu", chunk=16))
    assert all(isinstance(result[v].data, dsa.Array) for v in ("classes", "probabilities", "confidence"))  # lazy
    with rasterio.open(map_path) as ds:
        assert result.rio.crs == ds.crs and result.rio.transform() == ds.transform
        assert result["classes"].shape == (ds.height, ds.width)
        expected = ds.read(1)
        nodata = ds.nodata
    computed = result.compute()
    assert np.array_equal(computed["classes"].values, expected)
    assert computed["classes"].rio.nodata == nodata and computed["classes"].values[3, 4] == nodata
    p = computed["probabilities"].values
    assert np.isnan(p[:, 3, 4]).all() and np.isnan(computed["confidence"].values[3, 4])
    valid = ~np.isnan(p[0])
    assert np.allclose(p[:, valid].sum(axis=0), 1.0, atol=0.02)
    with rasterio.open(str(map_path).replace(".tif", "_probabilities.tif")) as ds:  # predict's, as stored
        stored = ds.read()
    assert np.array_equal(np.rint(p[:, valid] * 254), stored[:, valid]) and (stored[:, ~valid] == 255).all()
    assert list(computed["probabilities"]["class"].values) == [1, 2, 3]
    assert np.allclose(computed["confidence"].values[valid], p[:, valid].max(axis=0))


def test_predict_array_refusals(model_and_map):
    scene_path, model, _ = model_and_map
    with pytest.raises(CssdError, match="takes an xarray DataArray"):
        predict_array(model, scene_path)  # type: ignore[arg-type]
    with pytest.raises(CssdError, match="predict_array is lazy"):
        predict_array(model, cssd_geo.open_scene(scene_path), PredictConfig(scheduler="tcp://x:8786"))


def test_predict_writes_an_in_memory_scene(model_and_map, tmp_path):
    """A numpy-backed DataArray (e.g. rioxarray.open_rasterio(...).load()) goes through predict()."""
    scene_path, model, map_path = model_and_map
    out = tmp_path / "memory.tif"
    cssd_geo.predict(model, cssd_geo.open_scene(scene_path).load(), out, PredictConfig(device="cpu"))
    with rasterio.open(out) as a, rasterio.open(map_path) as b:
        assert np.array_equal(a.read(), b.read()) and a.transform == b.transform
