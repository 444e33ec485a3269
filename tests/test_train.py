"""The training loop's learning-rate schedules and batching."""
import numpy as np
import pytest

from cssd_geo.classes import make_class_table
from cssd_geo.config import TrainConfig
from cssd_geo.errors import CssdError
from cssd_geo.io.scene import open_scene
from cssd_geo.model import ModelConfig
from cssd_geo.sampling import Samples
from cssd_geo.train import _batch_starts, train_model
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
