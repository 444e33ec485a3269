"""benchmarks/bench_predict.py: the README's Speed table is what the saved run gives; the mosaic
scene is the base scene repeated; a missed target says so."""
from __future__ import annotations

import copy
import importlib.util
import json
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_predict", os.path.join(ROOT, "benchmarks", "bench_predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved() -> dict:
    with open(os.path.join(ROOT, "results", "speed", "cpu.json"), encoding="utf-8") as f:
        return json.load(f)


def test_the_readme_speed_table_is_the_saved_run(bench):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert "<!-- speed: results/speed/cpu.json -->" in text
    assert bench.generated_doc(text, ROOT) == text, \
        "README's Speed table differs from results/speed/cpu.json: run benchmarks/bench_predict.py --report " \
        "--update-doc README.md"


def test_every_row_the_issue_asks_for_is_in_the_table(bench):
    table = bench.speed_table(saved())
    for row in ("engine / per-window inference", "model-FLOP utilisation", "end-to-end time / max(read-only",
                "peak RSS, 8192 x 8192", "time per pixel, 16x area", "README demo training", "`cssd-geo --help`"):
        assert row in table, row


def test_a_missed_target_says_missed(bench):
    figures = copy.deepcopy(saved())
    figures["cpu"]["model_flop_utilisation"] = 0.10
    figures["help_seconds"] = 0.2
    table = bench.speed_table(figures)
    assert "| 10.0 % | >= 35 % (missed) |" in table
    assert "| 0.20 s | < 1 s |" in table
    figures["help_seconds"] = 3.0
    assert "| 3.00 s | < 1 s (missed) |" in bench.speed_table(figures)


def test_the_mosaic_is_the_scene_repeated(bench, tmp_path):
    tile = tmp_path / "tile.tif"
    data = np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7)
    with rasterio.open(tile, "w", driver="GTiff", width=7, height=5, count=3, dtype="int16", crs="EPSG:32633",
                       transform=from_origin(380000, 5820000, 30, 30)) as ds:
        ds.write(data)
    bench.mosaic_vrt(str(tile), str(tmp_path / "mosaic.vrt"), repeat=4)
    with rasterio.open(tmp_path / "mosaic.vrt") as ds:
        assert (ds.height, ds.width, ds.count) == (20, 28, 3)
        assert ds.transform == from_origin(380000, 5820000, 30, 30) and ds.crs.to_epsg() == 32633
        assert np.array_equal(ds.read(), np.tile(data, (1, 4, 4)))
