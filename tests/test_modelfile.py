import json
import os
import pickle

import numpy as np
import pytest
import torch

import cssd_geo
from cssd_geo.classes import ClassInfo
from cssd_geo.errors import CssdError
from cssd_geo.model import CSSD, ModelConfig, save_model
from cssd_geo.model.modelfile import read_model_metadata


def make_model():
    classes = [ClassInfo(3, "roof", (255, 0, 0)), ClassInfo(7, "tree", (0, 255, 0))]
    model = CSSD(8, 2, ModelConfig(patch=5, tau=3.0, eps=0.2), classes=classes)
    model.set_normalisation(np.arange(8, dtype=np.float32), np.ones(8, dtype=np.float32) * 2)
    return model.eval()


def test_round_trip(tmp_path):
    model = make_model()
    path = tmp_path / "m.cssd"
    save_model(model, path, {"band_names": [f"b{i}" for i in range(8)], "wavelengths": None})
    loaded = cssd_geo.load_model(path)
    assert not loaded.training
    assert loaded.window == model.window == 5 + 2 * model.radius
    assert [c.id for c in loaded.classes] == [3, 7]
    assert loaded.classes[1]["name"] == "tree" and loaded.classes[1].color == (0, 255, 0)
    assert loaded.config == model.config and (loaded.config.tau, loaded.config.eps) == (3.0, 0.2)
    assert loaded.metadata["band_names"][2] == "b2"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(2, 8, model.window, model.window)
    assert torch.allclose(model(x), loaded(x))
    assert not [f for f in os.listdir(tmp_path) if f != "m.cssd"], "no temporary file left"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.cssd"
    with open(path, "wb") as f:
        pickle.dump({"state": _Exploit(marker)}, f)
    with pytest.raises(CssdError, match="not a cssd-geo model file"):
        cssd_geo.load_model(path)
    assert not marker.exists()
    torch_file = tmp_path / "torch.cssd"
    torch.save(make_model().state_dict(), torch_file)
    with pytest.raises(CssdError, match="not a cssd-geo model file"):
        cssd_geo.load_model(torch_file)


def test_incompatible_version_is_explained(tmp_path):
    import json

    from safetensors.torch import save_file

    path = tmp_path / "future.cssd"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"cssd_geo": json.dumps(
        {"format": "cssd-geo-model", "format_version": 99, "package_version": "9.0"})})
    with pytest.raises(CssdError, match="format version 99"):
        read_model_metadata(path)
    with pytest.raises(CssdError, match="not found"):
        cssd_geo.load_model(tmp_path / "missing.cssd")


def test_ablation_architecture_round_trips(tmp_path):
    from cssd_geo.model import CSSD

    torch.manual_seed(0)
    model = CSSD(8, 2, ModelConfig(patch=5, refiner_depth=0, pooling="mean")).eval()
    assert model.radius == 2  # SpaFE + classifier only
    save_model(model, tmp_path / "plain.cssd", {})
    loaded = cssd_geo.load_model(tmp_path / "plain.cssd")
    assert (loaded.config.refiner_depth, loaded.config.pooling, loaded.window) == (0, "mean", 9)
    x = torch.randn(2, 8, 9, 9)
    assert torch.allclose(model(x), loaded(x))


@pytest.mark.parametrize("refiner", ["weighted", "dilation"])
def test_architecture_rebuilds_the_module(refiner):
    config = ModelConfig(patch=7, se_size=5, refiner_depth=1, refiner=refiner, pooling="mean", auxiliary=False,
                         tau=1.5, eps=0.1, heads="both")
    model = CSSD(10, 4, config)
    arch = json.loads(json.dumps(model.architecture()))  # as stored in the file
    again = CSSD(**arch)
    assert again.config == config and (again.bands, again.n_classes, again.window) == (10, 4, model.window)
    assert [k for k, _ in again.state_dict().items()] == [k for k, _ in model.state_dict().items()]


def test_a_format_1_model_file_still_loads(tmp_path):
    """Files written before the architecture was ModelConfig: flat settings, SpeFR depth named
    se_depth, the auxiliary switch in the training config."""
    from safetensors.torch import save_file

    model = CSSD(8, 2, ModelConfig(patch=5, refiner_depth=1, refiner="dilation", auxiliary=False, tau=3.0)).eval()
    header = {"format": "cssd-geo-model", "format_version": 1, "package_version": "0.1.0",
              "architecture": {"bands": 8, "n_classes": 2, "patch": 5, "se_size": 3, "se_depth": 1,
                               "tau": 3.0, "eps": 0.5, "pooling": "sap"},
              "classes": [{"id": 1, "name": "a", "color": [1, 2, 3]}, {"id": 2, "name": "b", "color": [4, 5, 6]}],
              "train_config": {"auxiliary": False}}
    path = tmp_path / "old.cssd"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"cssd_geo": json.dumps(header)})
    loaded = cssd_geo.load_model(path)
    assert loaded.config == model.config
    x = torch.randn(2, 8, model.window, model.window)
    assert torch.allclose(model(x), loaded(x))


def test_a_format_2_model_file_loads_with_its_dilation_refiner(tmp_path):
    """Format 2 had today's layout but only the dilation form of SpeFR (no ``refiner`` setting)."""
    from safetensors.torch import save_file

    model = CSSD(8, 3, ModelConfig(patch=5, refiner="dilation")).eval()
    config = {k: v for k, v in model.architecture()["config"].items() if k != "refiner"}
    header = {"format": "cssd-geo-model", "format_version": 2, "package_version": "0.3.0",
              "architecture": {"bands": 8, "n_classes": 3, "config": config},
              "classes": [{"id": i, "name": str(i), "color": [i, i, i]} for i in (1, 2, 3)]}
    path = tmp_path / "v2.cssd"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"cssd_geo": json.dumps(header)})
    loaded = cssd_geo.load_model(path)
    assert loaded.config.refiner == "dilation" and loaded.config == model.config
    x = torch.randn(2, 8, model.window, model.window)
    assert torch.allclose(model(x), loaded(x))


def test_an_architecture_this_version_cannot_build_is_explained(tmp_path):
    model = CSSD(8, 2, ModelConfig(patch=5))
    path = tmp_path / "m.cssd"
    save_model(model, path, {})
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["cssd_geo"])
    header["architecture"]["config"]["dropout"] = 0.5
    save_file(load_file(str(path)), str(path), metadata={"cssd_geo": json.dumps(header)})
    with pytest.raises(CssdError, match="stored architecture is not one this version builds.*dropout"):
        cssd_geo.load_model(path)
