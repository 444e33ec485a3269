import numpy as np
import pytest
import torch

from cssd_geo.blocks import predict_logits
from cssd_geo.errors import CssdError
from cssd_geo.io.scene import open_scene
from cssd_geo.model import CSSD, ModelConfig, distillation_loss
from cssd_geo.model.layers import SpectralExtractor


def randomised(model: CSSD, seed: int = 0) -> CSSD:
    """A model with random weights and non-trivial BatchNorm statistics, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return model.eval()


def test_receptive_radius_comes_from_the_layers():
    model = CSSD(12, 3, ModelConfig(patch=11))
    # SpeFR: 2 dilations by a 3x3 element (2), SpaFE 3x3 (1), classifier 3x3 (1)
    assert model.radius == 4 and model.window == 19 and model.reach == 9
    deeper = CSSD(12, 3, ModelConfig(patch=7, se_size=5, refiner_depth=3))
    assert deeper.radius == 3 * 2 + 1 + 1
    assert deeper.window == 7 + 2 * deeper.radius
    with pytest.raises(CssdError, match="--patch 10"):
        CSSD(12, 3, ModelConfig(patch=10))


def test_forward_shapes():
    model = CSSD(12, 4, ModelConfig(patch=5)).eval()
    x = torch.randn(3, 12, model.window, model.window) * 100 + 1000
    assert model(x).shape == (3, 4)
    model.train()
    patch_logits, aux_logits = model.forward_train(x)
    assert patch_logits.shape == aux_logits.shape == (3, 4)
    with pytest.raises(ValueError):
        model(torch.randn(1, 12, model.window + 2, model.window + 2))


@pytest.mark.parametrize("train_mode", [False, True])
def test_spectral_extractor_equals_convolutions(train_mode):
    torch.manual_seed(0)
    layer = SpectralExtractor(31, chunk=7)
    layer.train(train_mode)
    x = torch.randn(50, 31)
    assert torch.allclose(layer(x), layer.reference(x), atol=1e-4)


def test_missing_pixels_are_filled_with_the_band_mean():
    model = randomised(CSSD(6, 3, ModelConfig(patch=3)))
    model.set_normalisation(np.full(6, 100.0), np.full(6, 10.0))
    x = torch.full((1, 6, model.window, model.window), 130.0)
    x_nan, x_mean = x.clone(), x.clone()
    x_nan[0, :, 0, 1] = float("nan")
    x_mean[0, :, 0, 1] = 100.0
    assert torch.isfinite(model(x_nan)).all()
    assert torch.allclose(model(x_nan), model(x_mean))


@pytest.mark.parametrize("variant", [{}, {"refiner_depth": 0}, {"pooling": "mean"},
                                     {"refiner_depth": 0, "pooling": "mean"}],
                         ids=["cssd", "no-spefr", "mean-pooling", "plain-cnn"])
def test_tiled_prediction_equals_per_window_forward(tmp_path, variant):
    """Every pixel's logits from the dense tiled path equal forward() on its window cut from
    the reflect-padded scene; tile borders and scene borders included; for the ablation
    variants too."""
    from tests.conftest import make_cube, write_scene

    cube = make_cube(23, 29, 9, seed=3)
    path = write_scene(tmp_path / "s.tif", cube)
    model = randomised(CSSD(9, 3, ModelConfig(patch=5, **variant)), seed=1)
    model.set_normalisation(cube.reshape(9, -1).mean(1), cube.reshape(9, -1).std(1))
    scene = open_scene(path, chunks=8)
    tiled = predict_logits(model, scene, chunk=10)
    h = model.reach
    padded = np.pad(cube.astype(np.float32), ((0, 0), (h, h), (h, h)), mode="reflect")
    windows = np.stack([padded[:, r:r + model.window, c:c + model.window]
                        for r in range(cube.shape[1]) for c in range(cube.shape[2])])
    with torch.no_grad():
        per_window = model(torch.from_numpy(windows)).numpy()
    per_window = per_window.reshape(cube.shape[1], cube.shape[2], -1).transpose(2, 0, 1)
    assert np.abs(tiled - per_window).max() < 1e-4
    assert (tiled.argmax(0) == per_window.argmax(0)).all()
    whole = predict_logits(model, scene, chunk=64)
    assert np.abs(whole - tiled).max() < 1e-4


def test_distillation_target_is_constant():
    torch.manual_seed(0)
    patch_logits = torch.randn(5, 4, requires_grad=True)
    aux_logits = torch.randn(5, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0])
    tau, eps = 2.0, 0.4
    loss = distillation_loss(patch_logits, aux_logits, target, tau, eps)
    soft = eps * torch.softmax(aux_logits.detach() / tau, 1) + (1 - eps) * torch.nn.functional.one_hot(target, 4)
    expected = -(soft * torch.log_softmax(patch_logits, 1)).sum(1).mean() \
        - (soft * torch.log_softmax(aux_logits, 1)).sum(1).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    # with a constant target, d CE / d aux = (softmax(aux) - target) / B
    assert torch.allclose(aux_logits.grad, (torch.softmax(aux_logits.detach(), 1) - soft) / 5, atol=1e-6)
    hard = distillation_loss(patch_logits, aux_logits, target, tau, 0.0)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(hard, ce(patch_logits, target) + ce(aux_logits, target))


def test_plain_cnn_loss_is_the_patch_cross_entropy():
    torch.manual_seed(0)
    patch_logits, aux_logits = torch.randn(5, 4), torch.randn(5, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0])
    loss = distillation_loss(patch_logits, aux_logits, target, 2.0, 0.3, auxiliary=False)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(patch_logits, target))
    assert loss.grad_fn is None  # the auxiliary head gets no gradient
