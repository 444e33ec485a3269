"""The QGIS plugin in real QGIS (headless): the algorithms through processing.run with both
backends, cancelling, the styled output, qgis_process on the command line, and the plugin
zip installed into a clean profile."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import rasterio

pytest.importorskip("qgis.core", reason="QGIS's Python bindings are not importable in this environment; "
                                        "make test runs these tests in .venv-qgis when Debian's qgis and "
                                        "python3-qgis are installed")

from qgis_helpers import FIELDS, ROOT, SCENE, cli_executable, headless_env  # noqa: E402

from qgis_plugin import parameters as params  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # Debian's qgis_process wrapper passes an option 3.22 rejects


def _predict(model, out, **extra):
    import processing

    values = {params.MODEL: str(model), params.INPUT: str(SCENE), params.CHUNK: 64, params.DEVICE: "cpu",
              params.OUTPUT: str(out)}
    return processing.run("cssd:predict", {**values, **extra})


def test_provider_lists_the_algorithms(qgis_app):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("cssd")
    assert provider is not None and provider.name() == "CSSD"
    assert sorted(a.id() for a in provider.algorithms()) == ["cssd:area", "cssd:evaluate", "cssd:installruntime",
                                                            "cssd:map", "cssd:predict", "cssd:sample",
                                                            "cssd:suggest", "cssd:train"]
    train = QgsApplication.processingRegistry().algorithmById("cssd:train")
    names = [p.name() for p in train.parameterDefinitions()]
    main = [params.INPUT, params.LABELS, params.CLASS_FIELD, params.SHOTS, params.EPOCHS, params.PATCH, params.SEED,
            params.DEVICE, params.OUTPUT]
    assert names[:len(main)] == main
    advanced = [p for p in train.parameterDefinitions() if p.flags() & p.FlagAdvanced]
    assert [p.name() for p in advanced] == names[len(main):] and advanced


def test_every_training_option_has_a_parameter_with_cssd_geos_default():
    """ADVANCED_TRAINING (the plugin cannot import cssd_geo into QGIS) against TrainConfig and
    ModelConfig: the defaults, the choices of every choice option, and no option left out."""
    import typing

    from cssd_geo.config import TrainConfig, option_names

    config = TrainConfig()
    hints = {**typing.get_type_hints(TrainConfig), **typing.get_type_hints(type(config.model))}
    for _, field, kind, _, default in params.ADVANCED_TRAINING:
        expected = getattr(config.model, field) if hasattr(config.model, field) else getattr(config, field)
        assert default == expected, field
        if isinstance(kind, tuple):
            assert set(kind) == set(typing.get_args(hints[field])), field
    main = {"class_field", "shots", "epochs", "patch", "auto_patch", "seed", "device", "overwrite"}
    assert sorted(main | {row[1] for row in params.ADVANCED_TRAINING}) == sorted(option_names(TrainConfig))


def test_train_writes_a_model_with_the_layer_classes(trained_model):
    import cssd_geo

    model = cssd_geo.load_model(trained_model)
    assert model.n_classes == 16 and model.bands == 200
    assert {c.name for c in model.classes} >= {"Corn-notill", "Woods"}


def test_train_through_the_executable(qgis_app, tmp_path, backend_env):
    import processing

    import cssd_geo

    backend_env("executable")
    out = tmp_path / "cli.cssd"
    processing.run("cssd:train", {params.INPUT: str(SCENE), params.LABELS: str(FIELDS), params.CLASS_FIELD: "class_id",
                                  params.SHOTS: 2, params.EPOCHS: 1, params.PATCH: 5, params.SEED: 1,
                                  params.DEVICE: "cpu", params.OUTPUT: str(out),
                                  # advanced: renamed (--lr) and negated (--no-auxiliary) flags, a choice, a number
                                  params.advanced("learning_rate"): 0.002, params.advanced("auxiliary"): False,
                                  params.advanced("heads"): 1, params.advanced("unlabelled"): 4})
    model = cssd_geo.load_model(out)
    assert model.patch == 5 and model.metadata["train_config"]["shots"] == 2
    stored = model.metadata["train_config"]
    assert (stored["learning_rate"], stored["unlabelled"]) == (0.002, 4)
    assert (stored["model"]["auxiliary"], stored["model"]["heads"]) == (False, "both")


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_map_trains_and_predicts_in_one_step(qgis_app, tmp_path, backend, backend_env):
    """cssd:map: the styled map on the scene's grid with the classes' colours and names; the model
    only when OUTPUT_MODEL is given."""
    import processing

    import cssd_geo

    backend_env(backend)
    out, model = tmp_path / "map.tif", tmp_path / "kept.cssd"
    values = {params.INPUT: str(SCENE), params.LABELS: str(FIELDS), params.CLASS_FIELD: "class_id",
              params.SHOTS: 2, params.EPOCHS: 1, params.PATCH: 3, params.SEED: 1, params.DEVICE: "cpu",
              params.OUTPUT: str(out)}
    result = processing.run("cssd:map", {**values, params.OUTPUT_MODEL: str(model)})
    assert result[params.OUTPUT] == str(out) and cssd_geo.load_model(model).patch == 3
    with rasterio.open(SCENE) as scene, rasterio.open(out) as m:
        assert (m.crs, m.transform, m.shape) == (scene.crs, scene.transform, scene.shape)
        names = {int(k[6:]): v for k, v in m.tags(1).items() if k.startswith("CLASS_")}
        assert len(names) == 16 and "Woods" in names.values() and set(names) <= set(m.colormap(1))
    assert (tmp_path / "map.qml").exists()
    (tmp_path / "alone").mkdir()
    processing.run("cssd:map", {**values, params.OUTPUT: str(tmp_path / "alone" / "map.tif")})
    assert sorted(os.listdir(tmp_path / "alone")) == ["map.qml", "map.tif"]  # no model kept


def test_train_with_patch_0_chooses_it_from_the_labels(qgis_app, tmp_path, backend_env):
    import processing
    from qgis.core import QgsProcessingFeedback

    import cssd_geo

    class Log(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)

    backend_env("executable")
    out, log = tmp_path / "auto.cssd", Log()
    processing.run("cssd:train", {params.INPUT: str(SCENE), params.LABELS: str(FIELDS), params.CLASS_FIELD: "class_id",
                                  params.SHOTS: 2, params.EPOCHS: 1, params.PATCH: 0, params.SEED: 1,
                                  params.DEVICE: "cpu", params.OUTPUT: str(out)},
                   feedback=log)
    model = cssd_geo.load_model(out)
    estimate = model.metadata["field_estimate"]
    assert model.metadata["train_config"]["auto_patch"] is True
    assert estimate["patch"] == model.patch and model.patch in (3, 5, 7, 11)
    assert any("expected overall accuracy on unlabelled fields" in line for line in log.lines), log.lines


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_predict_writes_a_styled_map(trained_model, tmp_path, backend, backend_env):
    from qgis.core import QgsRasterLayer

    backend_env(backend)
    out = tmp_path / f"map_{backend}.tif"
    result = _predict(trained_model, out)
    assert result[params.OUTPUT] == str(out)
    with rasterio.open(out) as ds, rasterio.open(SCENE) as scene:
        assert ds.crs == scene.crs and ds.transform == scene.transform
        assert (ds.width, ds.height) == (scene.width, scene.height)
        ids = set(np.unique(ds.read(1)).tolist())
    assert ids and ids <= set(range(1, 17))
    layer = QgsRasterLayer(str(out), "map")  # QGIS picks up the .qml cssd-geo writes beside the map
    renderer = layer.renderer()
    assert renderer.type() == "paletted"
    labels = {c.value: c.label for c in renderer.classes()}
    assert labels[11] == "Soybean-mintill" and len(labels) == 16
    del renderer, layer


def test_both_backends_give_the_same_map(trained_model, tmp_path, backend_env):
    maps = []
    for backend in ("inprocess", "executable"):
        backend_env(backend)
        _predict(trained_model, tmp_path / f"{backend}.tif", CHUNK=0)
        with rasterio.open(tmp_path / f"{backend}.tif") as ds:
            maps.append(ds.read(1))
    assert np.array_equal(*maps)


def test_evaluate_writes_metrics(trained_model, tmp_path):
    import processing

    _predict(trained_model, tmp_path / "map.tif")
    out = tmp_path / "metrics.json"
    result = processing.run("cssd:evaluate", {params.INPUT: str(tmp_path / "map.tif"), params.LABELS: str(FIELDS),
                                              params.CLASS_FIELD: "class_id", params.OUTPUT: str(out)})
    metrics = json.loads(out.read_text())
    assert metrics["pixels"] == 10249
    assert 0.0 < metrics["overall_accuracy"] <= 1.0
    assert result[params.OVERALL_ACCURACY] == pytest.approx(metrics["overall_accuracy"])
    assert result[params.KAPPA] == pytest.approx(metrics["kappa"])


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_evaluate_with_the_model_leaves_out_its_training_pixels(trained_model, tmp_path, backend, backend_env):
    import processing

    import cssd_geo

    backend_env(backend)
    _predict(trained_model, tmp_path / "map.tif")
    out = tmp_path / "metrics.json"
    processing.run("cssd:evaluate", {params.INPUT: str(tmp_path / "map.tif"), params.LABELS: str(FIELDS),
                                     params.CLASS_FIELD: "class_id", params.MODEL: str(trained_model),
                                     params.OUTPUT: str(out)})
    trained = len(cssd_geo.load_model(trained_model).metadata["training_pixels"]["rows"])
    assert json.loads(out.read_text())["pixels"] == 10249 - trained > 0


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_suggest_writes_ranked_points_a_window_apart(trained_model, tmp_path, backend, backend_env):
    import processing
    from qgis.core import QgsVectorLayer

    import cssd_geo
    from cssd_geo.config import UNCERTAINTIES

    assert params.MEASURES == UNCERTAINTIES
    backend_env(backend)
    out = tmp_path / "next.gpkg"
    processing.run("cssd:suggest", {params.MODEL: str(trained_model), params.INPUT: str(SCENE), params.POINTS: 8,
                                    params.MEASURE: 1, params.DEVICE: "cpu", params.OUTPUT: str(out)})
    features = sorted(QgsVectorLayer(str(out), "next", "ogr").getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in features] == list(range(1, 9))
    scores = [f["uncertainty"] for f in features]
    assert scores == sorted(scores, reverse=True)
    window = cssd_geo.load_model(trained_model).window
    with rasterio.open(SCENE) as ds:
        cells = [ds.index(f.geometry().asPoint().x(), f.geometry().asPoint().y()) for f in features]
    assert min(max(abs(a[0] - b[0]), abs(a[1] - b[1])) for i, a in enumerate(cells) for b in cells[i + 1:]) >= window


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_sample_then_area(qgis_app, tmp_path, backend, backend_env):
    """cssd:sample draws a stratified sample of a map; labelled with the map's own classes,
    cssd:area gives an overall accuracy of 1 and the mapped areas, as a table layer and JSON."""
    from collections import Counter

    import processing
    from qgis.core import QgsVectorLayer
    from rasterio.transform import from_origin

    from cssd_geo.classes import make_class_table
    from cssd_geo.io.scene import Grid
    from cssd_geo.io.writers import ClassMapWriter
    from cssd_geo.outputs import OutputSet

    backend_env(backend)
    values = np.repeat(np.arange(1, 4, dtype=np.uint8), [1200, 600, 200]).reshape(40, 50)
    grid = Grid(rasterio.crs.CRS.from_epsg(32633), from_origin(383000.0, 5818000.0, 30.0, 30.0), 40, 50)
    with OutputSet() as outputs, ClassMapWriter(str(tmp_path / "map.tif"), grid,
                                                make_class_table([1, 2, 3], ["a", "b", "c"]), outputs) as writer:
        writer[0:40, 0:50] = values
    sample = tmp_path / "sample.gpkg"
    processing.run("cssd:sample", {params.INPUT: str(tmp_path / "map.tif"), params.POINTS: 60,
                                   params.MIN_PER_CLASS: 15, params.SEED: 1, params.OUTPUT: str(sample)})
    layer = QgsVectorLayer(str(sample), "sample", "ogr")
    assert sorted(Counter(f["map_id"] for f in layer.getFeatures()).items()) == [(1, 30), (2, 15), (3, 15)]
    reference = layer.fields().indexOf("reference")
    assert layer.startEditing()  # the analyst's labels: here the map's own classes
    for feature in layer.getFeatures():
        layer.changeAttributeValue(feature.id(), reference, feature["map_id"])
    assert layer.commitChanges()
    del layer
    table, estimates = tmp_path / "area.csv", tmp_path / "area.json"
    result = processing.run("cssd:area", {params.INPUT: str(tmp_path / "map.tif"), params.LABELS: str(sample),
                                          params.CLASS_FIELD: "reference", params.OUTPUT: str(table),
                                          params.OUTPUT_JSON: str(estimates)})
    assert result[params.OVERALL_ACCURACY] == pytest.approx(1.0) and result[params.OVERALL_ACCURACY_CI] == 0.0
    per_class = json.loads(estimates.read_text())["per_class"]
    assert [r["estimated_pixels"] for r in per_class] == pytest.approx([1200, 600, 200])
    assert table.read_text().splitlines()[0].startswith("id,name,mapped_pixels")


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_cancel_during_training_from_a_background_thread(qgis_app, tmp_path, backend, backend_env):
    """As the Processing dialog runs it: the algorithm in a background task (it does not ask
    for the main thread); the log names the device; Cancel during training stops the run and
    leaves no model."""
    import threading
    import time

    from qgis.core import (
        QgsApplication,
        QgsProcessingAlgorithm,
        QgsProcessingAlgRunnerTask,
        QgsProcessingContext,
        QgsProcessingFeedback,
    )

    class Feedback(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []
            self.threads: set[int] = set()

        def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
            self.lines.append(info)
            self.threads.add(threading.get_ident())
            if info.startswith("epoch"):  # training is under way: the user presses Cancel
                self.cancel()

        def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
            self.lines.append(error)

    backend_env(backend)
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("cssd:train")
    assert not algorithm.flags() & QgsProcessingAlgorithm.FlagNoThreading
    out = tmp_path / "model.cssd"
    context, feedback, finished = QgsProcessingContext(), Feedback(), []
    task = QgsProcessingAlgRunnerTask(algorithm, {
        params.INPUT: str(SCENE), params.LABELS: str(FIELDS), params.CLASS_FIELD: "class_id", params.SHOTS: 8,
        params.EPOCHS: 200, params.PATCH: 5, params.DEVICE: "cpu", params.OUTPUT: str(out)}, context, feedback)
    task.executed.connect(lambda ok, results: finished.append(ok))
    QgsApplication.taskManager().addTask(task)
    deadline = time.monotonic() + 300
    while not finished and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert finished == [False], feedback.lines[-5:]
    assert "device: cpu (as asked)" in feedback.lines
    assert any(line.startswith("epoch") for line in feedback.lines)
    assert any("cancelled" in line for line in feedback.lines), feedback.lines[-5:]
    assert threading.get_ident() not in feedback.threads  # the work ran off the main thread
    assert not out.exists() and not list(tmp_path.glob(".model.cssd.partial-*"))


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_cancel_stops_predict_and_leaves_no_output(trained_model, tmp_path, backend, backend_env):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    backend_env(backend)
    feedback = QgsProcessingFeedback()
    steps = []

    def cancel_after_first_chunk(value):
        steps.append(value)
        if value > 0:
            feedback.cancel()

    feedback.progressChanged.connect(cancel_after_first_chunk)
    out = tmp_path / "cancelled.tif"
    values = {params.MODEL: str(trained_model), params.INPUT: str(SCENE), params.CHUNK: 16, params.DEVICE: "cpu",
              params.OUTPUT: str(out)}
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("cssd:predict", values, feedback=feedback)
    assert max(steps) < 100  # stopped before the end
    assert sorted(os.listdir(tmp_path)) == []  # neither the map nor a partial file


def test_a_layer_without_a_file_is_refused(qgis_app):
    from qgis.core import QgsProcessingException

    from qgis_plugin.algorithms import raster_path

    class WmsLayer:
        def source(self):
            return "crs=EPSG:3857&format=image/png&layers=x&url=https://example.invalid/wms"

        def providerType(self):  # noqa: N802
            return "wms"

        def name(self):
            return "basemap"

    with pytest.raises(QgsProcessingException, match="not a raster file.*Save As"):
        raster_path(WmsLayer(), "Hyperspectral raster")


def test_without_a_runtime_the_algorithms_name_the_installer(qgis_app, monkeypatch, tmp_path):
    """Auto never runs inside QGIS's Python (opt-in): without an executable it names
    cssd:installruntime, even when QGIS's Python can import cssd_geo."""
    from qgis.core import QgsProcessingException

    from qgis_plugin import backend

    monkeypatch.setenv("CSSD_GEO_BACKEND", "auto")
    monkeypatch.delenv("CSSD_GEO_EXECUTABLE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert backend.library_importable()  # this test environment has cssd_geo
    with pytest.raises(QgsProcessingException, match=r"not installed for QGIS yet: run 'Install or update CSSD "
                                                     r"runtime' \(cssd:installruntime\)"):
        backend.choose()
    monkeypatch.setenv("CSSD_GEO_BACKEND", "inprocess")
    assert backend.choose() == "inprocess"
    monkeypatch.setattr(backend, "library_importable", lambda: False)
    with pytest.raises(QgsProcessingException, match="cannot import cssd_geo.*cssd:installruntime"):
        backend.choose()


def test_the_geometry_self_check_refuses_broken_geometry(qgis_app, monkeypatch):
    """In QGIS's Python, cssd_geo first reads, reprojects and rasterises a known square; labels
    that come out empty (the clash of geometry libraries) stop it with the runtime's name."""
    from qgis.core import QgsProcessingException

    import cssd_geo.io.vector
    from qgis_plugin import backend

    monkeypatch.setattr(backend, "_GEOMETRY_CHECKED", [])
    backend.geometry_self_check()  # this environment's libraries work
    assert backend._GEOMETRY_CHECKED == [True]
    monkeypatch.setattr(backend, "_GEOMETRY_CHECKED", [])
    broken = cssd_geo.io.vector.CssdError("the labels cover no pixel centre of the scene")

    def empty(*args, **kwargs):
        raise broken

    monkeypatch.setattr(cssd_geo.io.vector, "rasterize_labels", empty)
    with pytest.raises(QgsProcessingException, match=r"failed its geometry self-check \(CssdError: the labels cover "
                                                     r"no pixel.*cssd:installruntime"):
        backend.geometry_self_check()


def test_the_runtime_pins_the_tested_torch_and_honours_pips_configuration(qgis_app, monkeypatch):
    import re

    from qgis_plugin import runtime

    has_a_source = runtime.pip_has_a_source
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC \?= (.+)$", makefile, re.MULTILINE).group(1) == runtime.TORCH_DEFAULT
    monkeypatch.setattr(runtime, "nvidia_driver", lambda: False)
    monkeypatch.setattr(runtime, "pip_has_a_source", lambda python: False)
    assert runtime.torch_arguments("", "python") == [runtime.TORCH_DEFAULT, "--extra-index-url", runtime.CPU_INDEX]
    monkeypatch.setattr(runtime, "pip_has_a_source", lambda python: True)  # a mirror, find-links: pip decides
    assert runtime.torch_arguments("", "python") == [runtime.TORCH_DEFAULT]
    monkeypatch.setattr(runtime, "pip_has_a_source", lambda python: False)
    monkeypatch.setattr(runtime, "nvidia_driver", lambda: True)  # PyPI's Linux build carries CUDA
    assert runtime.torch_arguments("", "python") == [runtime.TORCH_DEFAULT]
    assert runtime.torch_arguments("torch==2.13.0 --index-url https://example.org/cu126", "python") == \
        ["torch==2.13.0", "--index-url", "https://example.org/cu126"]
    monkeypatch.setenv("PIP_FIND_LINKS", "/somewhere")
    assert has_a_source(sys.executable)


def _qgis_process(args, config_dir, plugin_path=None, timeout=300, **env):
    """Run qgis_process as a batch script would: its own Python, which cannot import cssd_geo, and
    no CSSD_GEO_* variable but those given."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("CSSD_GEO_")}
    if os.environ.get("VIRTUAL_ENV"):  # an activated venv's python on PATH would become QGIS's embedded one
        venv_bin = os.path.join(os.environ["VIRTUAL_ENV"], "bin")
        base["PATH"] = os.pathsep.join(p for p in base.get("PATH", "").split(os.pathsep) if p != venv_bin)
    base.update(headless_env(str(config_dir)), **env)
    if plugin_path:
        base["QGIS_PLUGINPATH"] = str(plugin_path)
    return subprocess.run([QGIS_PROCESS, *args], env=base, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process is not installed")
def test_qgis_process_runs_predict(trained_model, tmp_path):
    enabled = _qgis_process(["plugins", "enable", "qgis_plugin"], tmp_path / "profile", ROOT)
    assert enabled.returncode == 0, enabled.stderr
    listed = _qgis_process(["list"], tmp_path / "profile", ROOT)
    print("\n".join(line for line in listed.stdout.splitlines() if "cssd" in line.lower()))
    assert "cssd:predict" in listed.stdout and "cssd:train" in listed.stdout
    out = tmp_path / "batch.tif"
    run = _qgis_process(["--json", "run", "cssd:predict", "--", f"{params.MODEL}={trained_model}",
                         f"{params.INPUT}={SCENE}", f"{params.CHUNK}=64", f"{params.DEVICE}=cpu",
                         f"{params.OUTPUT}={out}"], tmp_path / "profile", ROOT,
                        CSSD_GEO_EXECUTABLE=cli_executable())
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout[run.stdout.index("{"):])
    assert report["results"][params.OUTPUT] == str(out)
    assert "--json-progress predict" in json.dumps(report["log"])  # ran through the executable
    with rasterio.open(out) as ds:
        assert ds.crs is not None and ds.width == 145 and ds.colormap(1)


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process is not installed")
def test_plugin_zip_installs_into_a_clean_profile(trained_model, tmp_path):
    archive = tmp_path / "cssd_geo_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_qgis_plugin.py"), str(archive)], check=True)
    plugins = tmp_path / "profile" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as z:
        assert not [n for n in z.namelist() if "__pycache__" in n or not n.startswith("qgis_plugin/")]
        assert "qgis_plugin/flags.py" in z.namelist()  # the CLI's flag table, for the executable backend
        # the plugin repository's packaging rules: one top folder, the licence, no caches or hidden files
        assert "qgis_plugin/LICENSE" in z.namelist()
        assert not [n for n in z.namelist() if n.endswith(".pyc") or "/." in n]
        metadata = z.read("qgis_plugin/metadata.txt").decode()
        for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "icon",
                    "experimental", "changelog"):
            assert f"\n{key}=" in metadata, key
        z.extractall(plugins)
    enabled = _qgis_process(["plugins", "enable", "qgis_plugin"], tmp_path / "profile")
    assert enabled.returncode == 0, enabled.stderr
    listed = _qgis_process(["list"], tmp_path / "profile")
    assert "cssd:train" in listed.stdout and "cssd:evaluate" in listed.stdout, listed.stdout[-2000:]
    # the installed copy writes the executable's command line with the zip's flag table
    out = tmp_path / "installed.tif"
    run = _qgis_process(["--json", "run", "cssd:predict", "--", f"{params.MODEL}={trained_model}",
                         f"{params.INPUT}={SCENE}", f"{params.CHUNK}=64", f"{params.DEVICE}=cpu",
                         f"{params.PROBABILITIES}=true", f"{params.OUTPUT}={out}"], tmp_path / "profile",
                        CSSD_GEO_EXECUTABLE=cli_executable())
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "--probabilities" in json.dumps(json.loads(run.stdout[run.stdout.index("{"):])["log"])
    assert out.exists() and (tmp_path / "installed_probabilities.tif").exists()


def test_the_executable_gets_every_option_under_the_clis_flag(qgis_app):
    """backend.command_line (the plugin's executable route) gives the CLI the options the
    in-QGIS route passes as config fields, the renamed and negated flags included."""
    from cssd_geo import cli
    from cssd_geo.config import EvaluateConfig, TrainConfig, from_options
    from qgis_plugin import backend

    options = {"learning_rate": 0.01, "auxiliary": False, "product_masks": False, "auto_patch": True, "shots": 3}
    argv = backend.command_line("train", {"scene": "s.tif", "labels": "l.shp", "output": "m.cssd"}, options)
    assert argv[0] == "--json-progress"
    parsed = cli._parser().parse_args(argv[1:])
    assert cli._config(TrainConfig, parsed) == from_options(TrainConfig, options)
    options = {"json_path": "m.json", "plot_path": "c.png", "exclude_training": "m.cssd"}
    argv = backend.command_line("evaluate", {"map": "x.tif", "labels": "l.shp"}, options)
    assert cli._config(EvaluateConfig, cli._parser().parse_args(argv[1:])) == from_options(EvaluateConfig, options)


@pytest.mark.parametrize("backend", ["inprocess", "executable"])
def test_errors_reach_qgis_as_the_cli_says_them(qgis_app, tmp_path, backend, backend_env):
    import processing
    from qgis.core import QgsProcessingException

    backend_env(backend)
    fake = tmp_path / "fake.cssd"
    fake.write_text("not a model")
    out = tmp_path / "map.tif"
    with pytest.raises(QgsProcessingException, match=r"fake.cssd: not a cssd-geo model file"):
        processing.run("cssd:predict", {params.MODEL: str(fake), params.INPUT: str(SCENE), params.OUTPUT: str(out)})
    assert not out.exists()


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process is not installed")
def test_a_new_user_installs_the_runtime_and_maps_from_a_clean_profile(tmp_path):
    """The route with no terminal: a clean profile, no CSSD_GEO_* variable; the zip installed,
    cssd:installruntime (the runtime from the package index through pip's own configuration),
    then cssd:map on the example, all through qgis_process."""
    archive = tmp_path / "cssd_geo_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_qgis_plugin.py"), str(archive)], check=True)
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as z:
        assert [n for n in z.namelist() if n.startswith("qgis_plugin/wheels/cssd_geo-")]
        z.extractall(plugins)
    assert _qgis_process(["plugins", "enable", "qgis_plugin"], profile).returncode == 0
    refused = _qgis_process(["run", "cssd:train", "--", f"{params.INPUT}={SCENE}", f"{params.LABELS}={FIELDS}",
                             f"{params.OUTPUT}={tmp_path / 'm.cssd'}"], profile)
    assert refused.returncode != 0 and "cssd:installruntime" in refused.stdout + refused.stderr
    installed = _qgis_process(["--json", "run", "cssd:installruntime"], profile, timeout=1500)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    executable = json.loads(installed.stdout[installed.stdout.index("{"):])["results"][params.EXECUTABLE]
    assert executable.startswith(str(profile)) and os.access(executable, os.X_OK)
    out = tmp_path / "map.tif"
    mapped = _qgis_process(["--json", "run", "cssd:map", "--", f"{params.INPUT}={SCENE}", f"{params.LABELS}={FIELDS}",
                            f"{params.CLASS_FIELD}=class_id", f"{params.SHOTS}=2", f"{params.EPOCHS}=1",
                            f"{params.PATCH}=3", f"{params.DEVICE}=cpu", f"{params.OUTPUT}={out}"], profile)
    assert mapped.returncode == 0, mapped.stdout[-3000:] + mapped.stderr[-3000:]
    log = json.dumps(json.loads(mapped.stdout[mapped.stdout.index("{"):])["log"])
    assert executable in log and "device: cpu (as asked)" in log
    with rasterio.open(SCENE) as scene, rasterio.open(out) as m:
        assert (m.crs, m.transform, m.shape) == (scene.crs, scene.transform, scene.shape)
        names = {int(k[6:]): v for k, v in m.tags(1).items() if k.startswith("CLASS_")}
        assert len(names) == 16 and "Woods" in names.values() and set(names) <= set(m.colormap(1))
    assert (tmp_path / "map.qml").exists()


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process is not installed")
def test_in_qgis_python_training_trains_or_refuses_and_never_crashes(tmp_path):
    """cssd-geo importable in QGIS's own Python (the packages of this test environment on its
    path) and the in-QGIS backend chosen: qgis_process either trains a model from the labels or
    refuses with the self-check's message; it never trains on empty labels and never crashes."""
    import sysconfig

    assert _qgis_process(["plugins", "enable", "qgis_plugin"], tmp_path / "profile", ROOT).returncode == 0
    out = tmp_path / "m.cssd"
    run = _qgis_process(["run", "cssd:train", "--", f"{params.INPUT}={SCENE}", f"{params.LABELS}={FIELDS}",
                         f"{params.CLASS_FIELD}=class_id", f"{params.SHOTS}=2", f"{params.EPOCHS}=1",
                         f"{params.PATCH}=3", f"{params.DEVICE}=cpu", f"{params.OUTPUT}={out}"],
                        tmp_path / "profile", ROOT, CSSD_GEO_BACKEND="inprocess",
                        PYTHONPATH=os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]))
    text = run.stdout + run.stderr
    print(text[-3000:])
    assert run.returncode >= 0 and "double free" not in text and "corruption" not in text  # no crash
    if run.returncode == 0:
        import cssd_geo

        assert len(cssd_geo.load_model(out).metadata["training_pixels"]["rows"]) == 2 * 16
    else:
        assert "failed its geometry self-check" in text and not out.exists()
