"""The border rule and the halo: prediction chunks read past the scene exactly as training
windows do."""
import dask.array as dsa
import numpy as np
import pytest
import torch

from cssd_geo.blocks import default_chunk
from cssd_geo.model import CSSD, ModelConfig
from cssd_geo.tiling import CHUNK_MEMORY, chunk_side, map_with_halo, pad_halo, reflect_index


@pytest.mark.parametrize("shape", [(2, 1, 5), (2, 7, 3), (3, 40, 33)])
@pytest.mark.parametrize("halo", [0, 1, 3, 9])
@pytest.mark.parametrize("chunk", [2, 4, 64])
def test_pad_halo_follows_the_border_rule(shape, halo, chunk):
    x = np.random.default_rng(0).random(shape)
    padded = pad_halo(dsa.from_array(x, chunks=(-1, chunk, chunk)), halo).compute()
    rows = reflect_index(np.arange(-halo, shape[1] + halo), shape[1])
    cols = reflect_index(np.arange(-halo, shape[2] + halo), shape[2])
    np.testing.assert_array_equal(padded, x[:, rows][:, :, cols])
    if halo < min(shape[1:]):  # within one reflection it is numpy's pad(mode="reflect")
        np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode="reflect"))


def test_map_with_halo_gives_each_chunk_its_neighbours():
    """A 3x3 box sum through map_with_halo equals the same sum over the padded scene, for any chunk."""
    x = np.random.default_rng(1).random((2, 23, 17)).astype(np.float32)

    def box(block: np.ndarray) -> np.ndarray:
        rows, cols = block.shape[1] - 2, block.shape[2] - 2
        core = sum(block[:, dy:rows + dy, dx:cols + dx] for dy in range(3) for dx in range(3))
        return core.astype(np.float32)

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    expected = box(padded)
    for chunk in (1, 5, 8, 100):
        out = map_with_halo(box, dsa.from_array(x), 1, chunk, 2).compute()
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_chunk_size_comes_from_what_the_model_holds_per_pixel():
    model = CSSD(200, 16)
    assert default_chunk(model) == chunk_side(model.floats_per_pixel(), model.reach, CHUNK_MEMORY)
    # features kept for SAP, a SpeFR stage's input, attention map, running maximum and block term
    assert model.floats_per_pixel() == 200 + 5 * 256 + 2 * 64
    assert default_chunk(model) == 96
    dilation = CSSD(200, 16, ModelConfig(refiner="dilation"))  # keeps both steps, not a block term
    assert dilation.floats_per_pixel() == 200 + 4 * 256 + 2 * 64 and default_chunk(dilation) == 128
    lighter = CSSD(200, 16, ModelConfig(refiner_depth=0))
    assert lighter.floats_per_pixel() < model.floats_per_pixel()
    assert default_chunk(lighter) >= default_chunk(model)
    assert default_chunk(model, torch.device("cpu"), memory=4 * CHUNK_MEMORY) > default_chunk(model)


def test_a_tile_that_runs_out_of_gpu_memory_is_split_and_gives_the_same_logits(monkeypatch):
    """dense_logits splits a tile in two (each with its halo) when the GPU runs out of memory,
    as often as needed; the logits equal the unsplit ones (an out-of-memory error injected
    for tiles of more than 12 output rows)."""
    from cssd_geo.blocks import dense_logits

    torch.manual_seed(0)
    model = CSSD(9, 4, ModelConfig(patch=3)).eval()
    x = torch.randn(1, 9, 40 + 2 * model.reach, 23 + 2 * model.reach)
    whole = dense_logits(model, x)
    tried: list[int] = []
    forward = model.dense_logits

    def small_tiles_only(tile: torch.Tensor) -> torch.Tensor:
        rows = tile.shape[-2] - 2 * model.reach
        tried.append(rows)
        if rows > 12:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(tile)

    monkeypatch.setattr(model, "dense_logits", small_tiles_only)
    split = dense_logits(model, x)
    assert tried[0] == 40 and max(r for r in tried if r <= 12) <= 12 and len(tried) > 3
    assert split.shape == whole.shape and torch.allclose(split, whole, atol=1e-5)
