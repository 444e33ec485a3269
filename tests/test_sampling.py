import numpy as np

from cssd_geo.classes import make_class_table
from cssd_geo.io.vector import LabelPixels
from cssd_geo.sampling import cut_windows, draw_shots
from tests.conftest import make_cube, write_scene


def _labels():
    index = np.full((40, 50), -1, dtype=np.int32)
    index[0:10, 0:20] = 0  # 200 pixels
    index[20:30, 10:40] = 1  # 300 pixels
    index[36, 5:12] = 2  # 7 pixels, none on a stride-5 grid (scene row 136)
    r, c = np.nonzero(index >= 0)
    return LabelPixels(r + 100, c + 200, index[r, c].astype(np.int64), make_class_table([1, 2, 3], ["a", "b", "c"]))


def test_counts_and_shortfall():
    s = draw_shots(_labels(), 16, seed=0)
    assert np.bincount(s.index).tolist() == [16, 16, 7]
    assert s.available == {0: 200, 1: 300, 2: 7} and s.drawn == {0: 16, 1: 16, 2: 7}
    assert len(set(zip(s.rows, s.cols, strict=False))) == len(s)  # no pixel twice
    assert (s.rows >= 100).all() and (s.cols >= 200).all()  # scene coordinates


def test_seed_repeatability():
    a, b, c = (draw_shots(_labels(), 10, seed=k) for k in (1, 1, 2))
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols)
    assert not (np.array_equal(a.rows, c.rows) and np.array_equal(a.cols, c.cols))


def test_grid_scheme_and_valid_mask():
    labels = _labels()
    s = draw_shots(labels, 5, seed=0, scheme="grid", stride=5)
    big = s.index < 2
    assert (s.rows[big] % 5 == 0).all() and (s.cols[big] % 5 == 0).all()
    assert (s.index == 2).sum() == 5  # class c has no pixel on the grid: falls back to all
    valid = labels.index != 0  # the pixels of class a are nodata in the scene
    s = draw_shots(labels, 5, seed=0, valid=valid)
    assert s.drawn[0] == 0 and s.drawn[1] == 5


def test_windows_come_from_the_reflect_padded_scene(tmp_path):
    import cssd_geo

    cube = make_cube(15, 17, 4)
    da = cssd_geo.open_scene(write_scene(tmp_path / "s.tif", cube), chunks=8)
    rows, cols = np.array([0, 7, 14, 3]), np.array([0, 8, 16, 15])
    windows = cut_windows(da, rows, cols, 9, block=8)
    padded = np.pad(cube.astype(np.float32), ((0, 0), (4, 4), (4, 4)), mode="reflect")
    for w, r, c in zip(windows, rows, cols, strict=False):
        np.testing.assert_array_equal(w, padded[:, r:r + 9, c:c + 9])


def test_default_epochs_give_enough_optimiser_steps():
    from cssd_geo.config import TrainConfig

    assert TrainConfig().epochs_for(256) == 50  # 4 batches per epoch: 200 steps
    assert TrainConfig().epochs_for(30) == 150  # one batch per epoch: 150 steps
    assert TrainConfig(epochs=7).epochs_for(30) == 7  # an explicit choice is kept
