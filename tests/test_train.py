"""The training loop's learning-rate schedules and batching."""
import numpy as np
import pytest
import torch

from cssd_geo.classes import make_class_table
from cssd_geo.config import TrainConfig
from cssd_geo.errors import CssdError
from cssd_geo.io.scene import open_scene
from cssd_geo.model import ModelConfig
from cssd_geo.sampling import Samples
from cssd_geo.training import _batch_starts, train_model
from tests.conftest import class_layout, make_cube, write_scene


def _train(tmp_path, **changes):
    scene = open_scene(write_scene(tmp_path / "s.tif", make_cube(20, 24, 12)))
    layout = class_layout(20, 24)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 20, 9), rng.integers(0, 24, 9)
    history: list = []
    config = TrainConfig(batch_size=4, epochs=4, device="cpu", model=ModelConfig(patch=3), **changes)
    samples = Samples(rows, cols, layout[rows, cols] - 1)
    train_model(scene, samples, make_class_table([1, 2, 3], ["a", "b", "c"]), config, history=history)
    return [h["lr"] for h in history]


def test_cosine_schedule_anneals_to_zero_over_the_run(tmp_path):
    lrs = _train(tmp_path, schedule="cosine", learning_rate=0.01)
    assert len(lrs) == 4 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)  # 2 batches x 4 epochs = 8 steps, the last reaches 0
    assert lrs[1] == pytest.approx(0.005)  # half-way (step 4 of 8): cos(pi / 2)


def test_plateau_schedule_keeps_the_rate_on_a_short_run(tmp_path):
    assert _train(tmp_path, schedule="plateau", learning_rate=0.01) == [0.01] * 4


def test_lone_last_sample_is_left_out_of_the_epoch():
    assert _batch_starts(9, 4) == [0, 4]  # 4 + 4, the ninth sample waits for the next shuffle
    assert _batch_starts(10, 4) == [0, 4, 8]
    assert _batch_starts(1, 4) == [0]


def test_unknown_schedule_is_refused():
    with pytest.raises(CssdError, match="--schedule step"):
        TrainConfig(schedule="step").validate()


def test_unlabelled_windows_are_valid_scene_pixels_from_a_few_tiles(tmp_path):
    from cssd_geo.sampling import draw_unlabelled_pixels

    cube = make_cube(40, 50, 6)
    cube[:, 10:14, :] = -9999.0  # nodata rows
    scene = open_scene(write_scene(tmp_path / "s.tif", cube, nodata=-9999.0))
    rows, cols = draw_unlabelled_pixels(scene, seed=3, tiles=4, tile=16)
    assert rows.size == cols.size > 0 and len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == rows.size
    assert not ((rows >= 10) & (rows < 14)).any()
    assert rows.max() < 40 and cols.max() < 50
    again = draw_unlabelled_pixels(scene, seed=3, tiles=4, tile=16)
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], cols)
    # at most 4 tiles of 16 x 16 pixels (the last tile of a row or column takes the remainder)
    assert rows.size <= 4 * 31 * 31
    whole = draw_unlabelled_pixels(scene, seed=3, tiles=100, tile=16)
    assert whole[0].size == 36 * 50  # every valid pixel when the tiles cover the scene


def test_a_steps_unlabelled_windows_are_centred_close_together():
    """Each step's unlabelled windows come from one neighbourhood, so they share most of
    their pixels; different steps reach different places."""
    import torch

    from cssd_geo.training import NEIGHBOURHOOD, UnlabelledWindows

    rows, cols = torch.meshgrid(torch.arange(60), torch.arange(60), indexing="ij")
    windows = UnlabelledWindows(torch.zeros(1, 1), torch.zeros(3600, 1, 1, dtype=torch.int64),
                                rows.flatten(), cols.flatten())
    generator = torch.Generator().manual_seed(0)
    anchors = set()
    for _ in range(20):
        pick = windows.draw(32, generator)
        r, c = windows.rows[pick], windows.cols[pick]
        assert pick.numel() == 32 and pick.unique().numel() == 32
        assert int(r.max() - r.min()) <= 2 * NEIGHBOURHOOD and int(c.max() - c.min()) <= 2 * NEIGHBOURHOOD
        anchors.add((int(r.min()) // 10, int(c.min()) // 10))
    assert len(anchors) > 5
    lone = UnlabelledWindows(torch.zeros(1, 1), torch.zeros(1, 1, 1, dtype=torch.int64),
                             torch.tensor([5]), torch.tensor([7]))
    assert lone.draw(4, generator).tolist() == [0, 0, 0, 0]  # fewer pixels than windows: drawn again


def test_unlabelled_sampling_reads_a_bounded_part_of_a_large_scene():
    """On a 20,000 x 20,000 pixel lazy scene only the chosen tiles are computed."""
    import dask.array as dsa
    import xarray as xr

    reads = []

    def block(x, block_info=None):
        reads.append(block_info[0]["array-location"] if block_info else None)
        return x

    data = dsa.ones((8, 20_000, 20_000), dtype="float32", chunks=(8, 1000, 1000)).map_blocks(block, dtype="float32")
    scene = xr.DataArray(data, dims=("band", "y", "x"))
    from cssd_geo.sampling import draw_unlabelled_pixels

    rows, cols = draw_unlabelled_pixels(scene, seed=0)
    assert rows.size == 16 * 48 * 48
    assert 0 < len(reads) <= 4 * 16  # a tile touches at most 4 chunks; never the whole scene (400 chunks)


def test_no_label_beyond_the_shots_reaches_training(tmp_path, monkeypatch):
    """Two label files that agree on the drawn shots and disagree everywhere else give the same
    model: unlabelled windows carry no label, validation only scores."""
    import importlib

    import geopandas as gpd
    import torch
    from shapely.geometry import box

    from cssd_geo.model import load_model
    from tests.conftest import CRS, ORIGIN, PIXEL

    def rect(r0, r1, c0, c1):  # pixel rows r0:r1, columns c0:c1
        return box(ORIGIN[0] + c0 * PIXEL, ORIGIN[1] - r1 * PIXEL, ORIGIN[0] + c1 * PIXEL, ORIGIN[1] - r0 * PIXEL)

    def write_labels(name, extra):  # top half class 1, bottom half class 2, and ``extra`` features
        shapes = [(rect(0, 15, 0, 30), 1), (rect(15, 30, 0, 30), 2), *extra]
        frame = gpd.GeoDataFrame({"class_id": [c for _, c in shapes]}, geometry=[g for g, _ in shapes], crs=CRS)
        frame.to_file(tmp_path / f"{name}.gpkg")
        return tmp_path / f"{name}.gpkg"

    cube = make_cube(30, 30, 8)
    path = write_scene(tmp_path / "s.tif", cube)
    fixed = Samples(np.array([2, 5, 20, 25]), np.array([3, 20, 4, 22]), np.array([0, 0, 1, 1]))

    def same_shots(raster, *args, **kwargs):
        return Samples(fixed.rows, fixed.cols, fixed.index, {0: 2, 1: 2}, {0: 2, 1: 2})

    training = importlib.import_module("cssd_geo.training")
    monkeypatch.setattr(training, "draw_training_pixels", same_shots)
    models = []
    # b: other classes where no shot lies (later features win where they overlap)
    for name, extra in (("a", []), ("b", [(rect(8, 13, 10, 30), 2), (rect(16, 19, 0, 30), 1)])):
        labels = write_labels(name, extra)
        config = TrainConfig(epochs=3, batch_size=4, unlabelled=8, device="cpu", model=ModelConfig(patch=3))
        training.train(path, labels, tmp_path / f"{name}.cssd", config)
        models.append(load_model(tmp_path / f"{name}.cssd"))
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    stored = models[0].metadata["train_config"]  # the semi-supervised settings travel with the model
    assert (stored["unlabelled"], stored["teacher_threshold"]) == (8, 0.8)
    assert models[0].metadata["architecture"]["config"]["refiner"] == "weighted"


def test_semi_supervised_training_reports_teaching_and_the_structuring_element(tmp_path):
    scene = open_scene(write_scene(tmp_path / "s.tif", make_cube(20, 24, 12)))
    layout = class_layout(20, 24)
    rows, cols = np.array([1, 3, 10, 12, 17, 18]), np.array([2, 20, 5, 15, 3, 22])
    history: list = []
    log: dict = {}
    config = TrainConfig(batch_size=4, epochs=3, device="cpu", unlabelled=16, teacher_threshold=0.3,
                         model=ModelConfig(patch=3))
    train_model(scene, Samples(rows, cols, layout[rows, cols] - 1), make_class_table([1, 2, 3], ["a", "b", "c"]),
                config, history=history, log=log)
    assert all(h["taught"] is not None and 0.0 <= h["taught"] <= 1.0 for h in history)
    assert log["seconds_per_step"] > 0
    start, end = log["structuring_element"]["start"], log["structuring_element"]["end"]
    assert len(start) == len(end) == 2 and np.shape(start[0]) == (3, 3) and start != end
    history_off: list = []
    train_model(scene, Samples(rows, cols, layout[rows, cols] - 1), make_class_table([1, 2, 3], ["a", "b", "c"]),
                TrainConfig(batch_size=4, epochs=3, device="cpu", unlabelled=0, model=ModelConfig(patch=3)),
                history=history_off)
    assert all(h["taught"] is None for h in history_off)
    # self-training: the centre-spectrum head also learns from its own pseudo-labels, so it ends elsewhere
    heads = []
    for self_training in (False, True):
        model, _ = train_model(scene, Samples(rows, cols, layout[rows, cols] - 1),
                               make_class_table([1, 2, 3], ["a", "b", "c"]),
                               TrainConfig(batch_size=4, epochs=3, device="cpu", unlabelled=16, teacher_threshold=0.3,
                                           self_training=self_training, model=ModelConfig(patch=3)))
        heads.append(model.aux.weight.detach().clone())
    assert not torch.equal(*heads)
