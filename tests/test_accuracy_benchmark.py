"""benchmarks/accuracy.py: matched windows, keys of old saved lines, the report's figures."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cssd_geo import datasets
from cssd_geo.config import TrainConfig
from cssd_geo.model import CSSD, ModelConfig

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark",
                                                  os.path.join(HERE, "..", "benchmarks", "accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def window_of(config: TrainConfig) -> int:
    return CSSD(8, 2, config.model).window


@pytest.mark.parametrize("changes", [{}, {"patch": 7}, {"refiner_depth": 1}, {"se_size": 5}])
def test_every_network_sees_cssds_window(bench, changes):
    options = {"seed": 0, **changes}
    cssd = bench.method_config("cssd", options)
    for method, method_changes in bench.METHODS.items():
        config = bench.method_config(method, options)
        if method_changes is None:
            assert config is None
            continue
        assert window_of(config) == window_of(cssd), method
        for name, value in method_changes.items():
            assert getattr(config.model if hasattr(config.model, name) else config, name) == value


def test_no_spefr_patch_grows_by_twice_spefrs_radius(bench):
    model = ModelConfig()
    spefr_radius = model.refiner_depth * (model.se_size // 2)
    for method in ("no_spefr", "cnn"):
        assert bench.method_config(method, {}).model.patch == model.patch + 2 * spefr_radius


def line(method, seed, oa, settings, **extra):
    return {"dataset": "salinas_a", "mode": "random", "shots": 5, "method": method, "seed": seed,
            "train_config": settings, "train_pixels": 30, "test_pixels": 100, "seconds": 1.0, "class_ids": [1, 10],
            "oa": oa, "aa": oa, "kappa": oa, "per_class": [oa, oa], "support": [50, 50], **extra}


def old_settings(bench, method):
    """Settings as lines saved before the matched windows had them: patch 11 for every method."""
    changes = bench.METHODS[method]
    config = bench.network_config({**changes})
    return {k: v for k, v in bench._settings_of(config).items() if k not in ("se_size", "bands")}


def test_old_lines_are_neither_done_nor_reported_as_matched(bench):
    old = line("no_spefr", 0, 0.9, old_settings(bench, "no_spefr"))
    assert old["train_config"]["patch"] == 11
    new = bench._settings_of(bench.method_config("no_spefr", {"seed": 0}))
    scene = {"dataset": "salinas_a", "mode": "random", "shots": 5, "method": "no_spefr"}
    assert bench._key(old, 0, old["train_config"]) != bench._key(scene, 0, new)
    assert bench._tag(old) == "window=15"
    assert bench._tag(line("no_spefr", 0, 0.9, new)) == ""
    cssd = line("cssd", 0, 0.9, old_settings(bench, "cssd"))
    assert bench._key(cssd, 0, cssd["train_config"]) == bench._key({**scene, "method": "cssd"}, 0, bench._settings_of(
        bench.method_config("cssd", {"seed": 0})))  # cssd's definition did not change
    assert bench._tag(cssd) == ""


def test_mean_std_is_the_sample_standard_deviation(bench):
    assert bench._mean_std([1.0, 2.0, 3.0], scale=1) == "2.00 ± 1.00"
    assert bench._mean_std([0.5], digits=1) == "50.0 ± n/a"


def test_report_reads_old_and_new_lines(bench, tmp_path):
    cssd = bench._settings_of(bench.method_config("cssd", {}))
    runs = [line("cssd", s, oa, old_settings(bench, "cssd")) for s, oa in ((0, 0.99), (1, 0.985))]
    runs += [line("cnn", 0, 0.98, old_settings(bench, "cnn")), line("svm", 0, 0.95, None),
             line("cssd", 2, 0.995, cssd, aux_oa=0.9, head_disagreement=0.1, window=19, run_config=cssd)]
    (tmp_path / "salinas_a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    text = bench.report(str(tmp_path))
    assert "lowest 98.50 % (seed 1), best 99.50 % (seed 2)" in text
    assert "| salinas_a | 5 | random | cssd | 1 | 99.50 ± n/a | 99.50 ± n/a | 90.00 ± n/a | 10.00 ± n/a |" in text
    assert "15 x 15 window (patch 11)" in text and "(networks: window=15)" in text
    assert bench.RANDOM_NOTE in text and "ddof = 1" in text


def test_the_share_of_unlabelled_windows_taught_on_is_recorded_and_reported(bench, tmp_path):
    assert bench._taught([{"taught": None}, {"taught": 0.2}, {"taught": 0.4}]) == pytest.approx(0.3)
    assert bench._taught([{"taught": None}]) is None
    cssd = bench._settings_of(bench.method_config("cssd", {}))
    runs = [line("cssd", 0, 0.99, cssd, taught=0.01), line("cssd", 1, 0.98, cssd, taught=0.03),
            line("cssd", 2, 0.98, cssd)]
    (tmp_path / "berlin.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert "confident enough to teach on 2.00 ± 1.41 % of the unlabelled windows drawn in training (cssd, 2 runs" \
        in bench.report(str(tmp_path))


def test_a_folder_of_tuning_runs_alone_gets_no_empty_summary(bench, tmp_path):
    tuned = bench._settings_of(bench.method_config("cssd", {"unlabelled": 0}))
    runs = [line("cssd", s, oa, tuned) for s, oa in ((0, 0.99), (1, 0.98))]
    (tmp_path / "salinas_a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    text = bench.report(str(tmp_path))
    assert "### Overview" not in text and "### Targets" not in text and "not run" not in text
    assert "(networks: unlabelled=0)" in text and "98.50 ± 0.71" in text
    runs.append(line("cssd", 0, 0.97, bench._settings_of(bench.method_config("cssd", {}))))
    (tmp_path / "salinas_a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert "### Overview" in bench.report(str(tmp_path))


def test_report_gives_the_expected_accuracy_gap_and_the_disjoint_target(bench, tmp_path):
    auto = bench._settings_of(bench.method_config("cssd", {"auto_patch": True}))
    before = {**bench._settings_of(bench.method_config("cssd", {})), "auto_patch": True}  # saved before auto_heads
    cssd = bench._settings_of(bench.method_config("cssd", {}))
    disjoint = {"dataset": "berlin", "mode": "disjoint-gap4"}
    runs = [{**line("cssd", s, oa, auto, chosen_patch=p, chosen_heads=h, expected_oa=e, cv_seconds=10.0 * (s + 1)),
             **disjoint} for s, oa, p, h, e in ((0, 0.40, 5, "both", 0.45), (1, 0.30, 3, "both", 0.31),
                                               (2, 0.50, None, None, None))]
    runs += [{**line("cssd", s, 0.35, cssd), **disjoint} for s in (0, 1)]
    runs += [{**line("cssd", 0, 0.20, before, chosen_patch=7, chosen_heads="window", expected_oa=0.3,
                  cv_seconds=5.0), **disjoint}]
    runs += [{**line(m, s, oa, None), **disjoint} for m, s, oa in (("svm", 0, 0.31), ("svm", 1, 0.29),
                                                                    ("rf", 0, 0.20), ("rf", 1, 0.20))]
    (tmp_path / "berlin.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    text = bench.report(str(tmp_path))
    # two seeds chose (5, 3), one had too few fields; expected 45 and 31 against 40 and 30: gap +3.00 ± 2.83
    assert ("| berlin | 5 | disjoint-gap4 | auto_heads=window,both,spectral auto_patch=True | 3 | 3 (1), 5 (1) | "
            "both (2) | 1 | 38.00 ± 9.90 | 35.00 ± 7.07 | +3.00 ± 2.83 | 20 |") in text
    # a run saved before the centre-spectrum classifier was a candidate is a setting of its own
    assert "| berlin | 5 | disjoint-gap4 | auto_heads=window,both auto_patch=True | 1 | 7 (1) | window (1) |" in text
    # the best baseline is svm (30 % mean); cssd (35 %) is 5 points above it on both seeds
    assert ("| berlin, 5 shots, disjoint-gap4 split: >= 5 points above the best baseline | +5.00 ± 1.41 points "
            "against svm on the same samples (2 seeds; lowest +4.00) | met |") in text
    assert "only pixels more than 4 pixels from every training pixel" in text


def test_svm_spatial_adds_the_neighbourhood_mean(bench):
    rng = np.random.default_rng(0)
    labels = np.ones((12, 12), dtype=np.int32)
    labels[:, 6:] = 2
    cube = rng.normal(0, 1, (12, 12, 6)) + labels[..., None]
    scene = datasets.LabelledScene("toy", datasets.array_scene(cube, "toy"), labels,
                                   datasets._classes({1: "a", 2: "b"}))
    rows, cols = np.array([1, 5, 9, 10, 2, 6, 8, 11]), np.array([1, 2, 3, 4, 7, 8, 9, 10])
    predicted = bench.run_spectral(scene, rows, cols, "svm_spatial", 0)
    assert predicted.shape == labels.shape
    assert (predicted == labels).mean() > 0.9


@pytest.mark.parametrize("heads", ["window", "both", "spectral"])
def test_the_cssd_line_is_the_map_of_the_configured_heads(bench, heads):
    rng = np.random.default_rng(0)
    labels = np.ones((16, 16), dtype=np.int32)
    labels[:, 8:] = 2
    cube = rng.normal(0, 3, (16, 16, 6)) + labels[..., None]  # noisy: the three maps differ
    scene = datasets.LabelledScene("toy", datasets.array_scene(cube, "toy"), labels,
                                   datasets._classes({1: "a", 2: "b"}))
    rows, cols = np.array([1, 5, 9, 10, 2, 6, 8, 11]), np.array([1, 2, 3, 4, 9, 10, 12, 13])
    config = bench.method_config("cssd", {"epochs": 3, "patch": 3, "heads": heads, "device": "cpu"})
    predicted, aux, window, both = bench.run_network(scene, rows, cols, config, None, [], {})
    assert (window != aux).any() and (window != both).any() and (aux != both).any()
    assert np.array_equal(predicted, {"window": window, "both": both, "spectral": aux}[heads])


def test_docs_results_tables_are_the_report_of_the_saved_runs(bench):
    """Every table of docs/results.md is generated from results/ (python benchmarks/accuracy.py
    --update-doc docs/results.md): a table edited by hand, or runs saved without regenerating,
    fail here."""
    root = Path(__file__).resolve().parents[1]
    doc = root / "docs" / "results.md"
    text = doc.read_text(encoding="utf-8")
    sections = bench.REPORT_SECTION.findall(text)
    assert {s[1] for s in sections} >= {"results/accuracy", "results/tuning"}
    assert bench.generated_doc(text, str(doc.parent)) == text
    outside = bench.REPORT_SECTION.sub("", text)
    assert "|---|" not in outside  # no table outside the generated sections


def test_a_retired_option_at_todays_behaviour_is_todays_setting(bench):
    """A run saved with an option since removed (RETIRED) counts as today's settings when the
    option had the value that is today's behaviour, and as a setting of its own otherwise."""
    today = bench._settings_of(bench.method_config("cssd", {}))
    name, value = next(iter(bench.RETIRED.items()))
    as_today = line("cssd", 0, 0.9, {**today, name: value})
    other = line("cssd", 0, 0.9, {**today, name: not value})
    assert bench._tag(as_today) == "" and bench._tag(other) == f"{name}={not value}"
    assert bench._key(as_today, 0, as_today["train_config"]) == bench._key(as_today, 0, today)
    assert bench._key(other, 0, other["train_config"]) != bench._key(other, 0, today)
