"""Test-time augmentation: the mean over the 8 dihedral views of each window, still tiled exactly."""
import itertools

import numpy as np
import pytest
import rasterio
import torch

import cssd_geo
from cssd_geo import cli
from cssd_geo.blocks import predict_logits
from cssd_geo.io.scene import open_scene
from cssd_geo.model import CSSD, ModelConfig
from cssd_geo.tiling import dihedral_views
from tests.conftest import make_cube, write_scene
from tests.test_model import randomised


def _numpy_views(w: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square on the last two axes, written out independently of
    :func:`dihedral_views`: 4 turns, the transpose, the two flips and the anti-transpose."""
    t = np.swapaxes(w, -2, -1)
    turns = [np.rot90(w, k, axes=(-2, -1)) for k in range(4)]
    return [*turns, t, np.flip(w, -2), np.flip(w, -1), np.rot90(t, 2, axes=(-2, -1))]


def _mean_over_views(model: CSSD, windows: np.ndarray) -> np.ndarray:
    """Reference TTA probabilities [N, K]: mean of softmax(model(view(window))) over the views."""
    with torch.no_grad():
        probabilities = [torch.softmax(model(torch.from_numpy(np.ascontiguousarray(v))), 1).numpy()
                         for v in _numpy_views(windows)]
    return np.mean(probabilities, axis=0)


def _windows(model: CSSD, cube: np.ndarray, pixels: list[tuple[int, int]]) -> np.ndarray:
    """The model's windows around ``pixels`` cut from the reflect-padded scene."""
    h = model.reach
    padded = np.pad(cube.astype(np.float32), ((0, 0), (h, h), (h, h)), mode="reflect")
    return np.stack([padded[:, r:r + model.window, c:c + model.window] for r, c in pixels])


def test_tta_tiled_prediction_equals_mean_over_views_of_each_window(tmp_path):
    """With tta, every pixel's probabilities from the tiled engine (scene and tile borders
    included, several chunk sizes) equal the mean softmax over the 8 views of its window."""
    cube = make_cube(23, 29, 9, seed=3)
    model = randomised(CSSD(9, 3, ModelConfig(patch=5)), seed=2)
    model.set_normalisation(cube.reshape(9, -1).mean(1), cube.reshape(9, -1).std(1))
    scene = open_scene(write_scene(tmp_path / "s.tif", cube), chunks=8)
    # per-window forwards are slow: the scene's corners and edges, and both sides of the
    # chunk edges (model.reach = 6, 10, 13), against every pixel from the engine
    rows, cols = (0, 5, 6, 9, 10, 12, 13, 22), (0, 9, 12, 13, 28)
    pixels = list(itertools.product(rows, cols))
    reference = _mean_over_views(model, _windows(model, cube, pixels)).T.reshape(-1, len(rows), len(cols))
    tiled = {}
    for chunk in (model.reach, 10, 13, 64):
        logits = predict_logits(model, scene, chunk=chunk, tta=True)
        tiled[chunk] = torch.softmax(torch.from_numpy(logits), 0).numpy()
        at_pixels = tiled[chunk][:, rows][:, :, cols]
        np.testing.assert_allclose(at_pixels, reference, atol=1e-5, err_msg=f"chunk {chunk}")
        assert (at_pixels.argmax(0) == reference.argmax(0)).all(), chunk
        np.testing.assert_allclose(tiled[chunk], tiled[model.reach], atol=1e-5, err_msg=f"chunk {chunk}")
        assert (tiled[chunk].argmax(0) == tiled[model.reach].argmax(0)).all(), chunk
    plain = torch.softmax(torch.from_numpy(predict_logits(model, scene, chunk=10)), 0).numpy()
    assert np.abs(plain - tiled[10]).max() > 1e-3  # the views matter to this model: the test can fail


def test_dihedral_views_are_eight_distinct_invertible_symmetries():
    views = dihedral_views()
    assert len(views) == 8
    square = torch.arange(2 * 5 * 5).reshape(2, 5, 5)
    seen = [v.apply(square) for v in views]
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(seen, 2))
    assert torch.equal(seen[0], square)  # the first is the identity
    expected = _numpy_views(square.numpy())  # the same 8 as the written-out list, in some order
    assert sorted(s.numpy().tobytes() for s in seen) == sorted(e.tobytes() for e in expected)
    tile = torch.arange(3 * 4 * 7).reshape(3, 4, 7)  # not square, as a scene's last chunks
    padded = torch.from_numpy(np.pad(tile.numpy(), ((0, 0), (2, 2), (2, 2)), mode="reflect"))
    for v in views:
        assert torch.equal(v.invert(v.apply(tile)), tile) and torch.equal(v.apply(v.invert(tile)), tile)
        assert v.invert(v.apply(tile)).shape == tile.shape
        # a view of the padded tile is the padded view: a tile with its halo turns as a whole
        turned = torch.from_numpy(np.pad(v.apply(tile).numpy(), ((0, 0), (2, 2), (2, 2)), mode="reflect"))
        assert torch.equal(v.apply(padded), turned)


@pytest.fixture(scope="module")
def undertrained(tmp_path_factory):
    """A model trained for 2 epochs on a 36 x 42 x 12 scene: its probabilities are far from 0 and 1."""
    folder = tmp_path_factory.mktemp("tta")
    cube = make_cube(36, 42, 12)
    scene = write_scene(folder / "scene.tif", cube)
    from tests.conftest import write_stripe_labels

    labels = write_stripe_labels(folder / "labels.gpkg", 36, 42)
    model = folder / "model.cssd"
    assert cli.main(["--quiet", "train", scene, "--labels", labels, "-o", str(model), "--epochs", "2",
                     "--shots", "8", "--patch", "5", "--seed", "1", "--device", "cpu"]) == 0
    return folder, scene, cube, model


def test_tta_flag_reaches_the_map_and_probabilities(undertrained):
    folder, scene, cube, model = undertrained
    outputs = {}
    for name, flags in (("plain", []), ("tta", ["--tta"])):
        out = folder / f"{name}.tif"
        assert cli.main(["--quiet", "predict", str(model), scene, "-o", str(out), "--chunk", "16",
                         "--probabilities", "--overwrite", *flags]) == 0
        with rasterio.open(out) as m, rasterio.open(folder / f"{name}_probabilities.tif") as p:
            outputs[name] = m.read(1), p.read()
    net = cssd_geo.load_model(model)
    pixels = [(0, 0), (5, 17), (18, 13), (20, 30), (35, 41)]
    expected = _mean_over_views(net, _windows(net, cube, pixels))
    ids = np.array([c.id for c in net.classes])
    tta_map, tta_p = outputs["tta"]
    plain_map, plain_p = outputs["plain"]
    assert set(np.unique(tta_map)) <= set(ids)
    for (r, c), p in zip(pixels, expected, strict=True):
        assert np.abs(tta_p[:, r, c].astype(int) - np.round(p * 254)).max() <= 1, (r, c)
        assert tta_map[r, c] == ids[p.argmax()], (r, c)
    assert not np.array_equal(tta_p, plain_p)  # the flag changed the probabilities
