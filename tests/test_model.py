import numpy as np
import pytest
import torch

from cssd_geo.blocks import predict_logits
from cssd_geo.errors import CssdError
from cssd_geo.io.scene import open_scene
from cssd_geo.model import CSSD, ModelConfig, distillation_loss
from cssd_geo.model.cssd import teaching_loss
from cssd_geo.model.layers import SpectralExtractor, SpectralRefiner


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
                                     {"refiner_depth": 0, "pooling": "mean", "auxiliary": False},
                                     {"refiner": "dilation"}, {"heads": "both"},
                                     {"heads": "spectral"}],
                         ids=["cssd", "no-spefr", "mean-pooling", "plain-cnn", "dilation-spefr", "both-heads",
                              "spectral-head"])
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


def test_prediction_is_the_mean_of_both_heads_probabilities_or_one_heads():
    model = randomised(CSSD(9, 4, ModelConfig(patch=5, heads="both")), seed=2)
    x = torch.randn(3, 9, model.window, model.window) * 0.5
    with torch.no_grad():
        both = torch.softmax(model(x), 1)
        window_logits, aux_logits = model.forward_train(x)
        model.config = ModelConfig(patch=5, heads="window")
        window_only = model(x)
        model.config = ModelConfig(patch=5, heads="spectral")
        spectral_only = model(x)
    assert torch.allclose(spectral_only, aux_logits, atol=1e-5)
    expected = (torch.softmax(window_logits, 1) + torch.softmax(aux_logits, 1)) / 2
    assert torch.allclose(both, expected, atol=1e-5)
    assert torch.allclose(window_only, window_logits, atol=1e-5)
    assert not torch.allclose(both, torch.softmax(window_only, 1), atol=1e-3)


def test_distillation_target_is_constant_and_the_auxiliary_head_learns_the_labels():
    torch.manual_seed(0)
    patch_logits = torch.randn(5, 4, requires_grad=True)
    aux_logits = torch.randn(5, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0])
    tau, eps = 2.0, 0.4
    loss = distillation_loss(patch_logits, aux_logits, target, tau, eps)
    onehot = torch.nn.functional.one_hot(target, 4).float()
    soft = eps * torch.softmax(aux_logits.detach() / tau, 1) + (1 - eps) * onehot
    expected = -(soft * torch.log_softmax(patch_logits, 1)).sum(1).mean() \
        + torch.nn.functional.cross_entropy(aux_logits, target)
    assert torch.allclose(loss, expected)
    loss.backward()
    # the auxiliary head's target is the label alone, never its own output
    assert torch.allclose(aux_logits.grad, (torch.softmax(aux_logits.detach(), 1) - onehot) / 5, atol=1e-6)
    assert torch.allclose(patch_logits.grad, (torch.softmax(patch_logits.detach(), 1) - soft) / 5, atol=1e-6)


def test_auxiliary_head_keeps_inter_class_structure():
    """Trained on its own, the auxiliary head's softened output ranks a class spectrally close to
    the true one above a distant one (a target holding its own output would flatten to uniform
    label smoothing instead)."""
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [6.0, 0.0]])  # class 1 is close to 0, class 2 far
    x = torch.cat([c + 0.6 * torch.randn(200, 2) for c in centres])
    y = torch.arange(3).repeat_interleave(200)
    head = torch.nn.Linear(2, 3)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        loss = distillation_loss(torch.zeros(600, 3), head(x), y, 2.0, 0.5)
        loss.backward()
        optimiser.step()
    soft = torch.softmax(head(centres[:1]) / 2.0, 1)[0]
    assert soft[1] > 2 * soft[2]


def test_teaching_loss_uses_confident_windows_class_balanced():
    aux = torch.tensor([[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.1]])
    patch = torch.zeros(5, 3, requires_grad=True)
    loss, passed = teaching_loss(patch, aux, tau=2.0, threshold=0.9)
    assert passed == 4  # the last window's teacher is not confident
    loss.backward()
    grad = patch.grad
    assert torch.equal(grad[4], torch.zeros(3))
    # class 0 has three confident windows, class 1 one: each class weighs the same in total
    assert torch.allclose(grad[:3].sum(0).abs().sum(), grad[3].abs().sum(), atol=1e-6)
    target = torch.softmax(aux[3] / 2.0, 0)
    assert torch.allclose(grad[3], 2.0 * (torch.softmax(torch.zeros(3), 0) - target) / 5, atol=1e-6)
    nothing, none = teaching_loss(patch, torch.zeros(5, 3), tau=2.0, threshold=0.9)
    assert none == 0 and float(nothing.detach()) == 0.0
    student = torch.zeros(5, 3, requires_grad=True)  # pseudo-labels: the teacher's class itself
    teaching_loss(student, aux, tau=2.0, threshold=0.9, hard=True)[0].backward()
    assert torch.allclose(student.grad[3], 2.0 * (torch.softmax(torch.zeros(3), 0) - torch.eye(3)[1]) / 5, atol=1e-6)


def test_spefr_weights_blocks_gates_them_and_takes_the_maximum():
    """SpeFR against a direct reading of its definition: for every offset q of the element,
    block q weighted by s_q, gated by sigmoid(conv(weighted block)), maximum over q."""
    torch.manual_seed(0)
    layer = SpectralRefiner(6, size=3, depth=1)
    with torch.no_grad():
        layer.structuring[0].copy_(torch.randn(3, 3) * 0.2)
    x = torch.rand(2, 6, 7, 8)
    s = torch.sigmoid(layer.SE_GAIN * layer.structuring[0])
    conv = layer.attention[0]
    terms = []
    for dy in range(3):
        for dx in range(3):
            weighted = s[dy, dx] * x[..., dy:dy + 5, dx:dx + 6]
            terms.append(weighted * torch.sigmoid(conv(weighted)))
    expected = torch.stack(terms).amax(0)
    out = layer(x)
    assert out.shape == (2, 6, 5, 6) and layer.radius == 1
    assert torch.allclose(out, expected, atol=1e-6)
    with torch.no_grad():  # the in-place inference path gives the same
        assert torch.allclose(layer(x), expected, atol=1e-6)
    deep = SpectralRefiner(6, size=5, depth=2)
    assert deep.radius == 4 and deep(torch.rand(1, 6, 11, 11)).shape == (1, 6, 3, 3)


def test_spefr_hand_written_backward_equals_autograd():
    """The stage's backward pass gives autograd's gradients of the direct definition, for
    the input, the attention's weight and bias and the structuring element (inputs with no
    ties between blocks, where the gradient of a maximum is unique)."""
    torch.manual_seed(0)
    layer = SpectralRefiner(5, size=3, depth=2)
    with torch.no_grad():
        for theta in layer.structuring:
            theta.copy_(torch.randn(3, 3) * 0.1)
    x = torch.randn(3, 5, 9, 8, dtype=torch.float64).requires_grad_()
    layer = layer.double()
    grad = torch.randn(3, 5, 5, 4, dtype=torch.float64)

    def direct(x):
        for theta, conv in zip(layer.structuring, layer.attention, strict=True):
            s = torch.sigmoid(layer.SE_GAIN * theta)
            h, w = x.shape[-2] - 2, x.shape[-1] - 2
            blocks = [s[dy, dx] * x[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
            terms = [block * torch.sigmoid(conv(block)) for block in blocks]
            x = torch.stack(terms).amax(0)
        return x

    params = [x, *layer.parameters()]
    expected = torch.autograd.grad(direct(x), params, grad)
    got = torch.autograd.grad(layer(x), params, grad)
    assert len(got) == 1 + 3 * 2  # x; per stage the SE, the weight and the bias
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(e, g, atol=1e-10), (e - g).abs().max()


def test_spefr_structuring_element_moves_in_training():
    """Peaked at the centre at the start; a short training run moves it by more than a few
    hundredths (the gain makes an Adam step count)."""
    torch.manual_seed(0)
    layer = SpectralRefiner(4, size=3, depth=1)
    start = np.array(layer.elements()[0])
    assert start[1, 1] > 0.85 and np.allclose(np.delete(start.ravel(), 4), 0.5)
    optimiser = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x = torch.rand(8, 4, 5, 5)
    for _ in range(100):
        optimiser.zero_grad()
        layer(x)[..., 0, 0].sum().backward()  # prefers the corner block: s there should grow
        optimiser.step()
    assert np.abs(np.array(layer.elements()[0]) - start).max() > 0.1


def test_plain_cnn_loss_is_the_patch_cross_entropy():
    torch.manual_seed(0)
    patch_logits, aux_logits = torch.randn(5, 4), torch.randn(5, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0])
    loss = distillation_loss(patch_logits, aux_logits, target, 2.0, 0.3, auxiliary=False)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(patch_logits, target))
    assert loss.grad_fn is None  # the auxiliary head gets no gradient


def test_the_device_is_described_for_the_log(monkeypatch):
    from cssd_geo.device import describe_device

    assert describe_device(torch.device("cpu"), "auto") == "cpu (no CUDA found)"
    assert describe_device(torch.device("cpu"), "cpu") == "cpu (as asked)"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"NVIDIA Test GPU {index}")
    assert describe_device(torch.device("cuda:1")) == "cuda:1 (NVIDIA Test GPU 1)"
