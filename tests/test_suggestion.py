"""cssd-geo suggest: the pixels where the model is least certain, a window apart, spread over the
predicted classes, ranked by uncertainty."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from cssd_geo import SuggestConfig, suggest
from cssd_geo.cli import main
from cssd_geo.suggestion import spaced, uncertainty

FAST = ["--epochs", "15", "--shots", "8", "--patch", "5", "--seed", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_and_probabilities(tmp_path_factory):
    """A quickly trained model of the stripes scene, and its probabilities over the scene."""
    from tests.conftest import make_cube, write_scene, write_stripe_labels

    folder = tmp_path_factory.mktemp("suggest")
    scene = write_scene(folder / "scene.tif", make_cube(36, 42, 12))
    labels = write_stripe_labels(folder / "labels.gpkg", 36, 42)
    model = folder / "model.cssd"
    assert main(["--quiet", "train", scene, "--labels", labels, "-o", str(model), *FAST]) == 0
    assert main(["--quiet", "predict", str(model), scene, "-o", str(folder / "map.tif"), "--probabilities"]) == 0
    with rasterio.open(folder / "map_probabilities.tif") as ds:
        p = ds.read().astype(np.float64) / 254
    return scene, model, p


def test_uncertainty_measures():
    p = np.array([[0.5, 1.0, 0.4], [0.5, 0.0, 0.35], [0.0, 0.0, 0.25]])
    assert uncertainty(p, "margin") == pytest.approx([1.0, 0.0, 0.95])
    assert uncertainty(p, "entropy") == pytest.approx([np.log(2) / np.log(3), 0.0,
                                                       -(0.4 * np.log(0.4) + 0.35 * np.log(0.35) + 0.25 * np.log(0.25))
                                                       / np.log(3)])


def test_spaced_keeps_the_order_and_the_distance():
    rows, cols = np.array([0, 1, 5, 0, 9]), np.array([0, 1, 0, 6, 9])
    assert spaced(rows, cols, 5, 10) == [0, 2, 3, 4]  # (1, 1) is within 5 of (0, 0)
    assert spaced(rows, cols, 5, 2) == [0, 2]
    assert spaced(rows, cols, 5, 10, taken=[(9, 8)]) == [0, 2, 3]


def test_suggest_through_the_cli(model_and_probabilities, tmp_path, capsys):
    scene, model, p = model_and_probabilities
    out = tmp_path / "next.gpkg"
    assert main(["suggest", str(model), scene, "-o", str(out), "--points", "6", "--spacing", "7"]) == 0
    captured = capsys.readouterr()
    assert "6 points at least 7 pixels apart" in captured.out
    assert "map written to" not in captured.err  # the probabilities' temporary map is not the user's
    frame = gpd.read_file(out, engine="pyogrio")
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5, 6] and frame["label"].isna().all()
    with rasterio.open(scene) as ds:
        rows, cols = (np.asarray(a) for a in rasterio.transform.rowcol(ds.transform, frame.geometry.x,
                                                                       frame.geometry.y))
        assert ((rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)).all()
    gaps = np.maximum(np.abs(rows[:, None] - rows[None]), np.abs(cols[:, None] - cols[None]))
    assert gaps[~np.eye(6, dtype=bool)].min() >= 7
    scores = uncertainty(p, "margin")
    # ranked by uncertainty, the first the least certain pixel of the scene, each the value at its pixel
    assert np.all(np.diff(frame["uncertainty"]) <= 0)
    assert frame["uncertainty"].to_numpy() == pytest.approx(scores[rows, cols])
    assert frame["uncertainty"][0] == pytest.approx(scores.max())
    assert frame["confidence"].to_numpy() == pytest.approx(p.max(axis=0)[rows, cols])
    # spread over the predicted classes: every class the map predicts has a point
    predicted = p.argmax(axis=0) + 1
    assert set(frame["predicted_id"]) == set(np.unique(predicted)) and len(set(frame["predicted_id"])) == 3
    assert (frame["predicted_id"].to_numpy() == predicted[rows, cols]).all()


def test_suggest_defaults_to_the_model_window_and_stops_when_the_scene_is_full(model_and_probabilities, tmp_path):
    scene, model, _ = model_and_probabilities
    result = suggest(model, scene, tmp_path / "all.geojson", SuggestConfig(points=500, device="cpu",
                                                                            measure="entropy"))
    assert result.spacing == 13  # patch 5 + 2 x SpeFR's reach of 4
    # a 36 x 42 scene holds at most ceil(36/13) x ceil(42/13) = 3 x 4 points 13 pixels apart
    assert 3 <= result.rows.size <= 12
    rows, cols = result.rows, result.cols
    gaps = np.maximum(np.abs(rows[:, None] - rows[None]), np.abs(cols[:, None] - cols[None]))
    assert gaps[~np.eye(result.rows.size, dtype=bool)].min() >= 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.geojson"]  # the probabilities were temporary


@pytest.mark.parametrize("config, message", [
    (SuggestConfig(points=0), "--points 0: suggest at least 1 point (e.g. 20)"),
    (SuggestConfig(spacing=0), "--spacing 0: give at least 1 pixel, or leave it out for the model's window"),
    (SuggestConfig(measure="variance"), "--measure variance: choose margin or entropy"),
])
def test_suggest_refusals(tmp_path, config, message):
    from cssd_geo import CssdError

    with pytest.raises(CssdError) as caught:
        suggest(tmp_path / "m.cssd", tmp_path / "s.tif", tmp_path / "next.gpkg", config)
    assert str(caught.value) == message
