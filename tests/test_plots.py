"""The figures are written completely and atomically."""
import os

import numpy as np
import rasterio

from cssd_geo import plots
from cssd_geo.classes import make_class_table


def test_figures_are_pngs_and_leave_no_partial_file(tmp_path):
    classes = make_class_table([1, 2, 3], ["roof", "tree", "water"])
    truth = np.array([[1, 2, 0], [3, 3, 2]])
    plots.class_maps([truth, np.where(truth > 0, 1, 0)], ["reference", "map"], classes, str(tmp_path / "maps.png"))
    plots.confusion_matrix([[3, 1, 0], [0, 2, 0], [1, 0, 5]], ["roof", "tree", "water"], str(tmp_path / "cm.png"))
    plots.training_curve([{"epoch": 1, "loss": 2.0, "val_oa": 0.4}, {"epoch": 2, "loss": 1.0, "val_oa": 0.7}],
                         str(tmp_path / "curve.png"))
    assert sorted(os.listdir(tmp_path)) == ["cm.png", "curve.png", "maps.png"]
    for name in ("cm.png", "curve.png", "maps.png"):
        with rasterio.open(tmp_path / name) as png:
            assert png.driver == "PNG" and png.width > 200 and png.height > 100
