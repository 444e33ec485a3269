"""The cssd-geo command end to end on a tiny scene, and its errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from cssd_geo import cli
from tests.conftest import CRS, make_cube, write_scene

FAST = ["--epochs", "15", "--shots", "8", "--patch", "5", "--seed", "1", "--device", "cpu"]


@pytest.fixture
def trained(small_scene, tmp_path):
    scene, labels, cube = small_scene
    model = tmp_path / "model.cssd"
    assert cli.main(["--quiet", "train", scene, "--labels", labels, "-o", str(model), *FAST]) == 0
    return scene, labels, cube, model


def test_train_predict_evaluate(trained, tmp_path, capsys):
    scene, labels, cube, model = trained
    out = tmp_path / "landcover.tif"
    png = tmp_path / "quick.png"
    args = ["--quiet", "predict", str(model), scene, "-o", str(out), "--chunk", "16", "--quicklook", str(png)]
    assert cli.main(args) == 0
    with rasterio.open(png) as q:
        assert q.driver == "PNG" and (q.width, q.height) == (42, 36) and q.colormap(1)[2][:3] == (255, 127, 14)
    with rasterio.open(scene) as src, rasterio.open(out) as m:
        assert m.crs == src.crs and m.crs.to_string() == CRS
        assert m.transform == src.transform and (m.width, m.height) == (src.width, src.height)
        assert m.count == 1 and m.dtypes[0] == "uint8" and m.nodata == 0
        assert m.profile["tiled"] and m.compression is not None
        cmap = m.colormap(1)
        assert {1, 2, 3} <= set(cmap) and cmap[0][3] == 0
        assert m.tags(1)["CLASS_2"] == "tree"
        classes = json.loads(m.tags()["CSSD_CLASSES"])
        assert [c["name"] for c in classes] == ["roof", "tree", "water"]
        values = set(np.unique(m.read(1)))
    assert values <= {1, 2, 3}
    assert (tmp_path / "landcover.qml").read_text().count("paletteEntry") == 3
    metrics = tmp_path / "metrics.json"
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--labels", labels, "--exclude-training", str(model),
                     "--json", str(metrics)]) == 0
    printed = capsys.readouterr().out
    assert "overall accuracy" in printed and "kappa" in printed
    report = json.loads((tmp_path / "model_training.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, 16))
    # 15 epochs: validated every second (ceil(15 / 10)) and on the last
    scored = [e["epoch"] for e in report["epochs"] if e["val_oa"] is not None]
    assert scored == [2, 4, 6, 8, 10, 12, 14, 15]
    assert report["validation_pixels"] > 0 and all(0 <= e["val_oa"] <= 1 for e in report["epochs"] if e["val_oa"])
    assert report["final_validation_oa"] > 0.8
    with rasterio.open(tmp_path / "model_training.png") as png:
        assert png.width > 300
    assert cli.main(["--quiet", "evaluate", str(out), "--labels", labels, "--plot", str(tmp_path / "cm.png")]) == 0
    with rasterio.open(tmp_path / "cm.png") as png:
        assert png.width > 300
    result = json.loads(metrics.read_text())
    for key in ("overall_accuracy", "average_accuracy", "kappa", "per_class", "confusion_matrix"):
        assert key in result
    assert 0 <= result["overall_accuracy"] <= 1 and 0 <= result["average_accuracy"] <= 1
    assert result["excluded_training_pixels"] == 24  # 8 shots x 3 classes
    assert np.sum(result["confusion_matrix"]) == result["pixels"]
    assert result["overall_accuracy"] > 0.8  # three well separated spectra
    mask = os.umask(0)
    os.umask(mask)
    for written in (model, out, tmp_path / "quick.png", tmp_path / "model_training.png", tmp_path / "cm.png"):
        assert os.stat(written).st_mode & 0o777 == 0o666 & ~mask, written  # not left private like a temp file


def test_band_mismatch_is_refused(trained, tmp_path, capsys):
    scene, labels, cube, model = trained
    other = write_scene(tmp_path / "other.tif", make_cube(36, 42, 10))
    capsys.readouterr()
    assert cli.main(["predict", str(model), other, "-o", str(tmp_path / "x.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "lacks 2 of the 12 bands" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x.tif").exists()
    shifted = tmp_path / "shifted.tif"
    write_scene(shifted, cube)
    with rasterio.open(shifted, "r+") as ds:
        ds.update_tags(5, wavelength="900")
    assert cli.main(["predict", str(model), str(shifted), "-o", str(tmp_path / "y.tif")]) == 2
    assert "lacks 1 of the 12 bands" in capsys.readouterr().err


def test_existing_output_needs_overwrite(trained, tmp_path, capsys):
    scene, labels, cube, model = trained
    out = tmp_path / "m.tif"
    out.write_text("keep me")
    assert cli.main(["predict", str(model), scene, "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_failed_prediction_leaves_nothing(trained, tmp_path, monkeypatch):
    scene, labels, cube, model = trained
    import threading
    import time

    from cssd_geo import blocks

    calls = {"n": 0, "running": 0}
    lock = threading.Lock()
    real = blocks.predict_block

    def failing(*args, **kwargs):
        with lock:
            calls["n"] += 1
            n = calls["n"]
            calls["running"] += 1
        try:
            if n == 3:
                raise RuntimeError("disk on fire")
            time.sleep(0.3)  # the other chunks are still running when chunk 3 fails
            return real(*args, **kwargs)
        finally:
            with lock:
                calls["running"] -= 1

    monkeypatch.setattr(blocks, "predict_block", failing)
    out_dir = tmp_path / "maps"
    out_dir.mkdir()
    assert cli.main(["--quiet", "predict", str(model), scene, "-o", str(out_dir / "m.tif"), "--chunk", "16",
                     "--probabilities"]) == 1
    assert calls["running"] == 0  # no chunk outlives the run (they wrote into closed files and crashed GDAL)
    assert os.listdir(out_dir) == []


def test_console_script_errors_are_one_line(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "cssd-geo")
    proc = subprocess.run([exe, "train", str(tmp_path / "missing.tif"), "--labels", "x.shp", "-o",
                           str(tmp_path / "m.cssd")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "missing.tif" in proc.stderr and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_training_is_repeatable_with_a_seed(trained, tmp_path):
    import torch

    import cssd_geo

    scene, labels, cube, model = trained
    again = tmp_path / "again.cssd"
    assert cli.main(["--quiet", "train", scene, "--labels", labels, "-o", str(again), *FAST]) == 0
    a, b = cssd_geo.load_model(model), cssd_geo.load_model(again)
    assert a.metadata["training_pixels"] == b.metadata["training_pixels"]
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_json_progress_lines(trained, tmp_path, capsys):
    scene, labels, cube, model = trained
    capsys.readouterr()
    assert cli.main(["--json-progress", "predict", str(model), scene, "-o", str(tmp_path / "m.tif"),
                     "--chunk", "16"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    stage = next(e for e in events if "stage" in e)
    assert stage == {"stage": "predict", "total": 9}  # 36 x 42 px in 16 px chunks: 3 x 3
    assert sum(e.get("advance", 0) for e in events) == 9
    assert any("map written to" in e.get("message", "") for e in events)
    # which device ran it: auto finds no CUDA on a CPU-only torch
    done = next(e["message"] for e in events if "map written to" in e.get("message", ""))
    assert done.endswith("; device: cpu (no CUDA found))") or torch.cuda.is_available()
    assert cli.main(["--json-progress", "predict", str(model), scene, "-o", str(tmp_path / "c.tif"),
                     "--device", "cpu"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert next(e["message"] for e in events if "map written to" in e.get("message", "")).endswith(
        "; device: cpu (as asked))")
    assert cli.main(["--json-progress", "train", scene, "--labels", labels, "-o", str(tmp_path / "t.cssd"),
                     *FAST]) == 0
    assert {"message": "device: cpu (as asked)"} in [json.loads(line) for line in capsys.readouterr().err.splitlines()]


@pytest.mark.parametrize("command, kind", [("train", "TrainConfig"), ("predict", "PredictConfig"),
                                           ("evaluate", "EvaluateConfig")])
def test_every_config_option_is_a_cli_option(command, kind):
    """The CLI builds configs from its parser by option name: each option of a config (the
    model's included) has exactly one command-line flag, and parsing no flag gives the defaults."""
    import argparse

    from cssd_geo import config

    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    dests = [a.dest for a in sub._actions]
    names = config.option_names(getattr(config, kind))
    assert sorted(n for n in dests if n in names) == sorted(names)
    positional = {"train": ["s.tif", "--labels", "l.shp", "-o", "m.cssd"],
                  "predict": ["m.cssd", "s.tif", "-o", "x.tif"],
                  "evaluate": ["x.tif", "--labels", "l.shp"]}[command]
    args = parser.parse_args([command, *positional])
    assert cli._config(getattr(config, kind), args) == getattr(config, kind)()


def test_model_options_reach_the_model_config():
    from cssd_geo.config import TrainConfig

    args = cli._parser().parse_args(["train", "s.tif", "--labels", "l.shp", "-o", "m.cssd", "--patch", "7",
                                     "--se-size", "5", "--refiner-depth", "0", "--pooling", "mean",
                                     "--no-auxiliary", "--tau", "3", "--eps", "0.25", "--lr", "0.01"])
    config = cli._config(TrainConfig, args)
    assert config.learning_rate == 0.01
    assert (config.model.patch, config.model.se_size, config.model.refiner_depth, config.model.pooling,
            config.model.auxiliary, config.model.tau, config.model.eps) == (7, 5, 0, "mean", False, 3.0, 0.25)


def test_unknown_option_is_refused():
    from cssd_geo.config import TrainConfig, from_options
    from cssd_geo.errors import CssdError

    with pytest.raises(CssdError, match="unknown option.*se_depth"):
        from_options(TrainConfig, {"se_depth": 3})


def test_map_trains_and_predicts_in_one_step(trained, tmp_path, capsys):
    """cssd-geo map gives the map that train then predict give (same seed), keeps the model
    only when asked, and checks the map's path before it trains."""
    scene, labels, _, model = trained
    assert cli.main(["--quiet", "predict", str(model), scene, "-o", str(tmp_path / "two_steps.tif")]) == 0
    (tmp_path / "one").mkdir()
    out = tmp_path / "one" / "map.tif"
    assert cli.main(["--quiet", "map", scene, "--labels", labels, "-o", str(out), *FAST]) == 0
    assert capsys.readouterr().out.strip() == f"map written to {out}"
    assert sorted(os.listdir(tmp_path / "one")) == ["map.qml", "map.tif"]  # no model, no temporary folder left
    with rasterio.open(out) as a, rasterio.open(tmp_path / "two_steps.tif") as b:
        assert np.array_equal(a.read(), b.read())
    kept = tmp_path / "kept.cssd"
    assert cli.main(["--quiet", "map", scene, "--labels", labels, "-o", str(tmp_path / "k.tif"),
                     "--model-output", str(kept), "--confidence", *FAST]) == 0
    assert kept.exists() and (tmp_path / "kept_training.json").exists() and (tmp_path / "k_confidence.tif").exists()
    assert cli.main(["--quiet", "map", scene, "--labels", labels, "-o", str(tmp_path / "no" / "m.tif"), *FAST]) == 2
    assert "the folder" in capsys.readouterr().err and not (tmp_path / "no").exists()


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "scene.tif"], ["predict", "--chunk", "x"]])
def test_help_and_argument_errors_do_not_import_torch_or_dask(argv):
    """The parser needs only the configs: --help and a bad argument answer without loading
    torch, dask or GDAL (a fresh interpreter, as the console script is)."""
    code = (f"import sys\nfrom cssd_geo import cli\ntry:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'dask', 'rasterio', 'geopandas', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:] + proc.stderr[-500:]
