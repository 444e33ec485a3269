"""A run's outputs appear together or not at all: the OutputSet, and predict / train /
evaluate failing after some of their files were written."""
import json
import os

import pytest

import cssd_geo
from cssd_geo import cli
from cssd_geo.outputs import OutputSet, output_file


def test_output_set_publishes_everything_on_success(tmp_path):
    (tmp_path / "b.txt").write_text("old")
    with OutputSet() as outputs:
        for name in ("a.txt", "b.txt"):
            with open(outputs.temporary(str(tmp_path / name)), "w") as f:
                f.write(name)
        scratch = outputs.scratch(str(tmp_path / "a.txt"))
        assert os.path.exists(scratch)
        assert sorted(os.listdir(tmp_path)) != ["a.txt", "b.txt"]  # the temporaries are there, hidden
        assert (tmp_path / "b.txt").read_text() == "old"  # nothing published before the end
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]
    assert (tmp_path / "b.txt").read_text() == "b.txt"
    assert oct(os.stat(tmp_path / "a.txt").st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_output_set_discards_everything_on_failure(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), OutputSet() as outputs:
        with open(outputs.temporary(str(tmp_path / "keep.txt")), "w") as f:
            f.write("new")
        os.mkdir(outputs.temporary(str(tmp_path / "store.zarr"), folder=True) + "/group")
        raise RuntimeError("failed after writing")
    assert os.listdir(tmp_path) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "old"


def test_output_file_replaces_a_folder_and_keeps_the_extension(tmp_path):
    store = tmp_path / "m.zarr"
    store.mkdir()
    (store / "old").write_text("x")
    with OutputSet() as outputs:
        tmp = outputs.temporary(str(store), folder=True)
        assert tmp.endswith(".zarr") and os.path.isdir(tmp)
        (tmp_path / os.path.basename(tmp) / "new").write_text("y")
    assert os.listdir(store) == ["new"]
    with output_file(str(tmp_path / "plot"), suffix=".png") as tmp:
        assert tmp.endswith(".png")
        open(tmp, "w").close()
    assert (tmp_path / "plot").exists()


@pytest.fixture
def model(small_scene, tmp_path_factory):
    scene, labels, _ = small_scene
    path = tmp_path_factory.mktemp("model") / "model.cssd"
    assert cli.main(["--quiet", "train", scene, "--labels", labels, "-o", str(path), "--epochs", "2",
                     "--shots", "4", "--patch", "3", "--device", "cpu"]) == 0
    return path


def test_failed_cog_conversion_leaves_no_map_style_or_side_output(small_scene, model, tmp_path, monkeypatch):
    import rasterio.shutil

    def broken_copy(*args, **kwargs):
        raise OSError("COG driver failed")

    monkeypatch.setattr(rasterio.shutil, "copy", broken_copy)
    folder = tmp_path / "maps"
    folder.mkdir()
    scene, _, _ = small_scene
    assert cli.main(["--quiet", "predict", str(model), scene, "-o", str(folder / "m.tif"), "--cog",
                     "--confidence", "--quicklook", str(folder / "m.png"), "--chunk", "16"]) == 2
    assert os.listdir(folder) == []


def test_prediction_outputs_are_published_together(small_scene, model, tmp_path, monkeypatch):
    from cssd_geo.io import writers

    def broken_quicklook(*args, **kwargs):
        raise OSError("PNG driver failed")

    monkeypatch.setattr("cssd_geo.prediction.write_quicklook", broken_quicklook)
    folder = tmp_path / "maps"
    folder.mkdir()
    scene, _, _ = small_scene
    with pytest.raises(OSError):
        cssd_geo.predict(model, scene, folder / "m.tif", cssd_geo.PredictConfig(
            chunk=16, probabilities=True, quicklook=str(folder / "m.png"), device="cpu"))
    assert os.listdir(folder) == []  # the map, its .qml and the probabilities were written, then discarded
    monkeypatch.setattr("cssd_geo.prediction.write_quicklook", writers.write_quicklook)
    cssd_geo.predict(model, scene, folder / "m.tif", cssd_geo.PredictConfig(
        chunk=16, probabilities=True, quicklook=str(folder / "m.png"), device="cpu"))
    assert sorted(os.listdir(folder)) == ["m.png", "m.qml", "m.tif", "m_probabilities.tif"]


def test_failed_training_report_leaves_no_model(small_scene, tmp_path, monkeypatch):
    from cssd_geo import plots

    def broken_curve(*args, **kwargs):
        raise RuntimeError("matplotlib failed")

    monkeypatch.setattr(plots, "training_curve", broken_curve)
    scene, labels, _ = small_scene
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(RuntimeError):
        cssd_geo.train(scene, labels, folder / "m.cssd", cssd_geo.TrainConfig(
            epochs=1, shots=4, device="cpu", model=cssd_geo.ModelConfig(patch=3)))
    assert os.listdir(folder) == []


def test_evaluate_writes_json_and_plot_together(small_scene, model, tmp_path, monkeypatch):
    from cssd_geo import plots

    scene, labels, _ = small_scene
    tif = tmp_path / "m.tif"
    cssd_geo.predict(model, scene, tif, cssd_geo.PredictConfig(chunk=16, device="cpu"))
    folder = tmp_path / "report"
    folder.mkdir()
    real = plots.confusion_matrix

    def broken_plot(*args, **kwargs):
        raise RuntimeError("matplotlib failed")

    monkeypatch.setattr(plots, "confusion_matrix", broken_plot)
    config = cssd_geo.EvaluateConfig(json_path=str(folder / "m.json"), plot_path=str(folder / "cm.png"))
    with pytest.raises(RuntimeError):
        cssd_geo.evaluate(tif, labels, config)
    assert os.listdir(folder) == []
    monkeypatch.setattr(plots, "confusion_matrix", real)
    result = cssd_geo.evaluate(tif, labels, config)
    assert sorted(os.listdir(folder)) == ["cm.png", "m.json"]
    assert json.loads((folder / "m.json").read_text())["overall_accuracy"] == result.overall_accuracy


def test_the_quicklook_of_a_large_map_is_read_decimated(tmp_path, monkeypatch):
    """A map longer than QUICKLOOK_SIDE on a side becomes a PNG of that side (nearest class,
    the colours kept), read decimated rather than whole."""
    import numpy as np
    import rasterio

    from cssd_geo.io import writers
    from tests.test_assessment import write_map

    values = np.ones((100, 250), dtype=np.uint8)
    values[:, 125:] = 2
    path = write_map(tmp_path / "map.tif", values, ["a", "b"])
    monkeypatch.setattr(writers, "QUICKLOOK_SIDE", 50)
    read_shapes = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        read_shapes.append(kwargs.get("out_shape"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    writers.write_quicklook(path, str(tmp_path / "q.png"))
    assert read_shapes == [(20, 50)]
    with rasterio.open(tmp_path / "q.png") as q:
        assert (q.width, q.height) == (50, 20)
        data = q.read(1)
        assert set(np.unique(data)) == {1, 2} and (data[:, :25] == 1).all() and (data[:, 25:] == 2).all()
        assert q.colormap(1)[2][:3] == (255, 127, 14)
