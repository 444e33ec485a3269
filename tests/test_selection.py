"""--patch auto: folds of whole fields, the choice on a scene that needs a small window, and the
fallback when there are too few fields."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cssd_geo import datasets
from cssd_geo.classes import ClassInfo
from cssd_geo.cli import main
from cssd_geo.config import TrainConfig
from cssd_geo.model import read_model_metadata
from cssd_geo.selection import _far, assign_folds, cross_validate, label_fields


def test_folds_hold_whole_fields_and_single_field_classes_always_train():
    index = np.array([[0, 0, -1, 0, -1, 1, 1],
                      [-1, -1, -1, -1, -1, -1, -1],
                      [0, -1, 2, 2, -1, 1, -1],
                      [-1, 2, -1, -1, -1, -1, -1]])
    r, c = np.nonzero(index >= 0)
    fields = np.zeros(index.shape, dtype=np.int32)
    fields[r, c] = label_fields(r, c, index[r, c])
    # class 0: three fields (0,0-1; 0,3; 2,0); class 1: two (0,5-6; 2,5); class 2: one (2,2-3 with 3,1 diagonal)
    assert fields[2, 2] == fields[2, 3] == fields[3, 1] and fields[0, 0] == fields[0, 1] != fields[0, 3]
    fold = assign_folds(fields[r, c], index[r, c], 2, seed=0)
    for g in np.unique(fields[r, c]):
        assert len(set(fold[fields[r, c] == g].tolist())) == 1  # a field is never split
    assert (fold[index[r, c] == 2] == -1).all()  # a single field: always trained on
    for k in (0, 1):  # every class with two or more fields is held out in both folds
        assert set(fold[index[r, c] == k].tolist()) == {0, 1}


def test_fields_of_scattered_pixels_are_those_of_labelling_each_class_raster():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    index = np.where(rng.random((60, 70)) < 0.45, rng.integers(0, 3, (60, 70)), -1)
    expected = np.zeros(index.shape, dtype=np.int32)
    for k in range(3):  # the dense way: one raster per class, 8-connected, numbered class by class
        parts, _ = ndimage.label(index == k, structure=np.ones((3, 3), dtype=bool))
        expected[parts > 0] = parts[parts > 0] + expected.max()
    r, c = np.nonzero(index >= 0)
    shuffle = rng.permutation(r.size)  # the order the pixels come in does not matter
    r, c = r[shuffle] + 5000, c[shuffle] + 90000  # nor where in a large scene they lie
    assert label_fields(r, c, index[r - 5000, c - 90000]).tolist() == expected[r - 5000, c - 90000].tolist()


def test_held_out_pixels_within_the_gap_of_a_training_pixel_are_not_scored():
    rows, cols = np.array([0, 3, 4, 5, 0, 9]), np.array([4, 0, 1, 5, 9, 9])
    keep = _far(rows, cols, np.array([0, 9]), np.array([1, 1]), gap=3)  # Chebyshev distance > 3 to both
    assert keep.tolist() == [False, False, True, True, True, True]  # (0, 4) and (3, 0) are 3 from (0, 1)


def _stripes(width: int, noise: float, seed: int = 0):
    """A scene of vertical stripes ``width`` pixels wide, classes 0, 1, 2 in turn (each class
    several separate fields), whose spectra are so noisy that a pixel alone is ambiguous."""
    h, w, bands = 24, 18 * width, 16
    layout = (np.arange(w) // width % 3)[None].repeat(h, 0)
    wl = np.linspace(0, 1, bands)
    signatures = np.stack([2000 + 1500 * wl, 3000 - 1800 * wl, 800 + 600 * np.sin(6 * wl)])
    cube = signatures[layout].transpose(2, 0, 1) + np.random.default_rng(seed).normal(0, noise, (bands, h, w))
    return datasets.array_scene(cube.astype(np.float32), "stripes", band_last=False), layout


def test_patch_auto_chooses_a_small_window_where_fields_are_narrow():
    da, layout = _stripes(width=3, noise=900.0)
    r, c = np.nonzero(layout >= 0)
    fields = np.zeros(layout.shape, dtype=np.int32)
    fields[r, c] = label_fields(r, c, layout[r, c])
    classes = [ClassInfo(k + 1, f"c{k}", (0, 0, 0)) for k in range(3)]
    torch.manual_seed(0)
    estimate = cross_validate(da, r, c, layout[r, c], fields[r, c], classes, TrainConfig(shots=8, epochs=10),
                              torch.device("cpu"), patches=(3, 11))
    assert estimate.patch == 3, estimate.scores
    best = np.mean(estimate.scores[f"P={estimate.patch} {estimate.heads}"])
    assert best > np.mean(estimate.scores["P=11 window"])
    assert estimate.folds == 2 and estimate.expected_oa == pytest.approx(best)
    assert estimate.low <= estimate.expected_oa <= estimate.high
    # the log line says how firm the figure is: 8 shots per class leave small held-out folds here
    scored = min(estimate.held_out_pixels)
    assert ("rough: a fold scored only" in estimate.summary()) == (scored < 50), (scored, estimate.summary())


def test_the_summary_calls_an_estimate_from_few_held_out_pixels_rough():
    from cssd_geo.selection import FieldEstimate

    few = FieldEstimate(5, "window", {}, 0.4, 0.3, 0.5, 2, [12, 7], ["a", "b"], 10.0)
    many = FieldEstimate(5, "window", {}, 0.4, 0.3, 0.5, 2, [480, 500], ["a", "b"], 10.0)
    assert few.summary().endswith("rough: a fold scored only 7 held-out pixels (label more pixels per field, "
                                  "e.g. whole polygons, for a firmer figure and choice)")
    assert "rough" not in many.summary() and many.summary().startswith(
        "expected overall accuracy on unlabelled fields: 40.0 % (range over 2 folds 30.0-50.0 %)")


def test_patch_auto_falls_back_with_too_few_fields(small_scene, tmp_path, capsys):
    scene, labels, _ = small_scene  # one polygon per class: nothing to hold out
    model = tmp_path / "m.cssd"
    code = main(["--quiet", "train", scene, "--labels", labels, "--class-field", "class_id", "-o", str(model),
                 "--epochs", "1", "--shots", "4", "--patch", "auto"])
    assert code == 0
    err = capsys.readouterr().err
    assert "too few fields to cross-validate" in err and "kept patch 11" in err
    meta = read_model_metadata(model)
    assert meta["train_config"]["auto_patch"] is True and meta["train_config"]["model"]["patch"] == 11
    assert meta["field_estimate"]["patch"] is None and "too few fields" in meta["field_estimate"]["note"]
    report = json.loads((tmp_path / "m_training.json").read_text())
    assert report["field_estimate"]["patch"] is None


def test_patch_option_refuses_text_other_than_auto(small_scene, tmp_path, capsys):
    scene, labels, _ = small_scene
    with pytest.raises(SystemExit):
        main(["train", scene, "--labels", labels, "-o", str(tmp_path / "m.cssd"), "--patch", "big"])
    assert "give an odd number of pixels (e.g. 11) or 'auto'" in capsys.readouterr().err
