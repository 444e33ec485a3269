"""Few-shot accuracy of CSSD, its ablations and baselines on the classic scenes.

Protocol of the few-shot literature: for each seed, k labelled pixels per class (a class with
fewer than 2k pixels gives half of them), train, test on all other labelled pixels; every
method gets the same samples in a seed. With --disjoint, samples are drawn from a random
subset of the connected fields of each class and only fields that gave no training pixel are
tested (random pixel splits let training windows cover test pixels).

    python benchmarks/accuracy.py --dataset indian_pines --shots 16 --seeds 10
    python benchmarks/accuracy.py --report results/accuracy    # tables from the saved runs

Each run (dataset, mode, shots, method, seed) is appended as one JSON line to
--out (default results/accuracy/<dataset>.jsonl); runs already there are skipped, so an
interrupted sweep resumes. Reads the data from --data (default ../shared/data).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from cssd_geo import datasets, sampling  # noqa: E402
from cssd_geo.blocks import predict_logits  # noqa: E402
from cssd_geo.classes import ClassInfo  # noqa: E402
from cssd_geo.config import TrainConfig, from_options, option_names  # noqa: E402
from cssd_geo.metrics import compute_metrics  # noqa: E402
from cssd_geo.train import train_model  # noqa: E402

SEEDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
# name: option changes from the defaults (CSSD; names as cssd_geo.config.option_names), or None
# for the spectral baselines
METHODS: dict[str, dict[str, Any] | None] = {
    "cssd": {},
    "eps0": {"eps": 0.0},  # ablation: no self-distillation
    "mean_pool": {"pooling": "mean"},  # ablation: SAP -> average pooling
    "no_spefr": {"refiner_depth": 0},  # ablation: no SpeFR
    "cnn": {"refiner_depth": 0, "pooling": "mean", "auxiliary": False},  # plain CNN on windows
    "svm": None,
    "rf": None,
}


def metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[ClassInfo]) -> dict[str, Any]:
    """The run's figures (as saved in the JSON lines) from :func:`cssd_geo.metrics.compute_metrics`;
    a class without test pixels has per-class accuracy NaN."""
    result = compute_metrics(truth, predicted, classes)
    return {"oa": result.overall_accuracy, "aa": result.average_accuracy, "kappa": result.kappa,
            "per_class": [float("nan") if c["accuracy"] is None else c["accuracy"] for c in result.per_class],
            "support": [c["support"] for c in result.per_class], "confusion": result.confusion_matrix}


def run_network(data: datasets.LabelledScene, rows, cols, config: TrainConfig, curve: np.ndarray | None = None,
                history: list | None = None) -> np.ndarray:
    """Class ids of every pixel from a network trained on (rows, cols); with ``curve`` (a
    mask of pixels), their overall accuracy after each epoch goes into ``history``."""
    ids = np.array([c.id for c in data.classes])
    index = {c.id: k for k, c in enumerate(data.classes)}
    targets = np.array([index[v] for v in data.labels[rows, cols]])
    held_out = None
    if curve is not None:
        r, c = sampling.validation_subset(*np.nonzero(curve), config.seed)
        held_out = (r, c, np.array([index[v] for v in data.labels[r, c]]))
    model, _ = train_model(data.scene, sampling.Samples(rows, cols, targets), data.classes, config,
                           held_out=held_out, history=history)
    logits = predict_logits(model, data.scene, chunk=64)
    return ids[logits.argmax(0)]


def run_spectral(data: datasets.LabelledScene, rows, cols, method: str, seed: int) -> np.ndarray:
    """Class ids of every pixel from an SVM-RBF (C, gamma by cross-validation) or a random
    forest on standardised spectra."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    cube = np.asarray(data.scene.values, dtype=np.float64)
    spectra = cube.reshape(cube.shape[0], -1).T
    x, y = cube[:, rows, cols].T, data.labels[rows, cols]
    if method == "svm":
        folds = min(3, int(np.unique(y, return_counts=True)[1].min()))
        grid = {"svc__C": [1, 10, 100, 1000, 10000], "svc__gamma": ["scale", 1e-3, 1e-2, 1e-1]}
        pipe = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
        model = GridSearchCV(pipe, grid, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)) \
            if folds >= 2 else pipe
    else:
        model = RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=-1)
    model.fit(x, y)
    return model.predict(spectra).reshape(cube.shape[1:])


def run(args) -> None:
    """Run every method on every seed not yet in the results file, appending one JSON line per run."""
    data = datasets.load(args.dataset, args.data)
    fields = data.fields() if args.disjoint else None
    mode = "disjoint" if args.disjoint else "random"
    out = args.out or os.path.join(HERE, "..", "results", "accuracy", f"{args.dataset}.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    done = set()
    if os.path.exists(out):
        with open(out) as f:
            done = {_key(r, r["seed"], r["train_config"]) for r in map(json.loads, f)}
    class_ids = [c.id for c in data.classes]
    torch.set_num_threads(args.threads or torch.get_num_threads())
    for seed in SEEDS[: args.seeds]:
        rows, cols, test = sampling.few_shot_split(data.labels, args.shots, seed, fields)
        if not test.any():
            raise SystemExit(f"{args.dataset}: a disjoint split leaves no pixel to test (every class is one "
                             "connected field); use the random split")
        for method in args.methods:
            changes = METHODS[method]
            config = None if changes is None else network_config(
                {"epochs": args.epochs, "device": args.device, "seed": seed, **args.set, **changes})
            settings = None if config is None else _settings_of(config)
            if _key({"dataset": args.dataset, "mode": mode, "shots": args.shots, "method": method}, seed,
                    settings) in done:
                continue
            start = time.perf_counter()
            history: list = []
            if config is None:
                predicted = run_spectral(data, rows, cols, method, seed)
            else:
                predicted = run_network(data, rows, cols, config, test if args.curve else None, history)
            seconds = time.perf_counter() - start
            result = {"dataset": args.dataset, "mode": mode, "shots": args.shots, "method": method, "seed": seed,
                      "train_config": settings, "train_pixels": int(len(rows)), "test_pixels": int(test.sum()),
                      "seconds": seconds, "class_ids": class_ids,
                      "class_names": [c.name for c in data.classes], "curve": history if args.curve else None,
                      **metrics(data.labels[test], predicted[test], data.classes)}
            with open(out, "a") as f:
                f.write(json.dumps(result) + "\n")
            if args.figures and seed == SEEDS[0]:
                _figures(args.figures, data, predicted, test, result, method, mode, args.shots)
            print(f"{args.dataset} {mode} k={args.shots} seed {seed} {method:<9} OA {100 * result['oa']:6.2f} "
                  f"AA {100 * result['aa']:6.2f} kappa {result['kappa']:.4f} ({seconds:.0f} s)", flush=True)


def _figures(folder: str, data, predicted: np.ndarray, test: np.ndarray, result: dict, method: str, mode: str,
             shots: int) -> None:
    """The reference next to the predicted map (all pixels, and test pixels only) and the
    confusion matrix of the test pixels, for the first seed."""
    from cssd_geo import plots

    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{data.name}_{shots}shots_{mode}_{method}")
    tested = np.where(test, predicted, 0)
    plots.class_maps([data.labels, predicted, tested],
                     ["reference", f"{method}, seed {SEEDS[0]}: every pixel",
                      f"test pixels (OA {100 * result['oa']:.1f} %)"], data.classes, f"{stem}_maps.png")
    plots.confusion_matrix(result["confusion"], [f"{c.id} {c.name}" for c in data.classes], f"{stem}_confusion.png",
                           title=f"{data.name}, {shots} shots, {method}: OA {100 * result['oa']:.2f} %")


# options that say where or how a network runs, not what it learns: left out of a run's settings
NOT_SETTINGS = ("class_field", "shots", "sampling", "grid_stride", "seed", "device", "overwrite")


def network_config(options: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from option names (cssd_geo.config.option_names)."""
    return from_options(TrainConfig, options)


def _settings_of(config: TrainConfig) -> dict[str, Any]:
    """What makes one network run differ from another besides the seed: every training and
    model option of ``config`` but those of NOT_SETTINGS, by option name."""
    values = {**asdict(config), **asdict(config.model)}
    return {name: values[name] for name in option_names(TrainConfig) if name not in NOT_SETTINGS}


def _key(run: dict[str, Any], seed: int, settings: dict[str, Any] | None) -> tuple[Any, ...]:
    """What identifies a run in the JSON-lines file: scene, split, shots, method, seed and
    the full network settings (so runs made with other defaults are never taken as done).
    An option a saved run does not record is newer than the run, which had that option's
    default behaviour (a new option's default keeps the old behaviour)."""
    full = None if settings is None else {**_settings_of(TrainConfig()), **settings}
    return (run["dataset"], run["mode"], run["shots"], run["method"], seed, json.dumps(full, sort_keys=True))


def _tag(run: dict) -> str:
    """How a run's network settings differ from the package's current defaults for its
    method, as sortable text ('' when they are the defaults, and for the baselines)."""
    if run["train_config"] is None:
        return ""
    defaults = _settings_of(network_config(METHODS[run["method"]] or {}))
    return " ".join(f"{k}={v}" for k, v in sorted(run["train_config"].items()) if defaults.get(k) != v)


def _settings(text: str) -> dict[str, Any]:
    """--set 'schedule=cosine tau=1' -> option changes, typed like the options' defaults."""
    defaults, changes = _settings_of(TrainConfig()), {}
    for item in text.replace(",", " ").split():
        key, _, value = item.partition("=")
        if key not in defaults or key == "epochs":
            raise argparse.ArgumentTypeError(f"{key!r} is not a network option --set can change")
        kind = type(defaults[key])
        changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return changes


def report(folder: str) -> str:
    """Markdown of every saved run in ``folder`` (mean +- std over seeds): an overview (OA of
    every method on every dataset, split and shots, at the default settings), per-class
    accuracy at the default settings, then one table per dataset, split, shots and network
    setting (epochs, --set); the spectral baselines, which have no such setting, appear in each
    table of their dataset, split and shots."""
    rows = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                rows += [json.loads(line) for line in f]
    networks: dict = {}
    spectral: dict = {}
    for r in rows:
        scene = (r["dataset"], r["mode"], r["shots"])
        if METHODS[r["method"]] is None:
            spectral.setdefault(scene, {}).setdefault(r["method"], []).append(r)
        else:
            setting = _tag(r)
            networks.setdefault(scene, {}).setdefault(setting, {}).setdefault(r["method"], []).append(r)
    scenes = sorted(set(networks) | set(spectral))
    defaults = {scene: {**networks.get(scene, {}).get("", {}), **spectral.get(scene, {})} for scene in scenes}
    lines = _overview(defaults) + [""] + _deltas(defaults) + [""]
    for scene in scenes:
        names = _class_names(scene[0], [r for r in rows if r["dataset"] == scene[0]])
        lines += _per_class(scene, defaults[scene], names) + [""]
    for scene in scenes:
        for tag, methods in sorted(networks.get(scene, {"": {}}).items()):
            methods = {**methods, **spectral.get(scene, {})}
            lines += _table(scene, tag, methods) + [""]
    return "\n".join(lines)


def _mean_std(values, scale: float = 100.0, digits: int = 2) -> str:
    values = np.asarray(values, dtype=float) * scale
    return f"{np.nanmean(values):.{digits}f} ± {np.nanstd(values):.{digits}f}"


def _overview(defaults: dict) -> list[str]:
    """OA % (mean ± std, seeds) of every method at the default settings, a row per scene."""
    methods = [m for m in METHODS if any(m in runs for runs in defaults.values())]
    lines = ["### Overview: OA % at the default settings (mean ± std over the seeds run, seeds in brackets)", "",
             "| dataset | k | split | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for (dataset, mode, shots), runs in sorted(defaults.items()):
        cells = [f"{_mean_std([r['oa'] for r in runs[m]])} ({len(runs[m])})" if m in runs else "" for m in methods]
        lines.append(f"| {dataset} | {shots} | {mode} | " + " | ".join(cells) + " |")
    return lines


def _deltas(defaults: dict) -> list[str]:
    """OA difference (points, mean ± std over the seeds both ran) of every other method against
    CSSD, a row per scene at the default settings."""
    methods = [m for m in METHODS if m != "cssd" and any(m in runs for runs in defaults.values())]
    lines = ["### Against CSSD: OA difference in points, mean ± std over the seeds both ran (seeds in brackets)", "",
             "| dataset | k | split | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for (dataset, mode, shots), runs in sorted(defaults.items()):
        cssd = {r["seed"]: r["oa"] for r in runs.get("cssd", [])}
        cells = []
        for m in methods:
            pairs = [(r["oa"], cssd[r["seed"]]) for r in runs.get(m, []) if r["seed"] in cssd]
            diffs = 100 * np.array([a - b for a, b in pairs])
            cells.append(f"{diffs.mean():+.2f} ± {diffs.std():.2f} ({len(pairs)})" if pairs else "")
        if any(cells):
            lines.append(f"| {dataset} | {shots} | {mode} | " + " | ".join(cells) + " |")
    return lines


def _class_names(dataset: str, runs: list) -> dict[int, str]:
    """Class id -> name: the dataset's known table, updated by the runs that recorded names."""
    names = {"indian_pines": datasets.INDIAN_PINES_CLASSES, "salinas_a": datasets.SALINAS_A_CLASSES}.get(dataset, {})
    known = dict(names)
    for r in runs:
        known.update(zip(r["class_ids"], r.get("class_names") or [], strict=False))
    return known


def _per_class(scene: tuple, runs: dict, names: dict[int, str]) -> list[str]:
    """Per-class accuracy % (mean ± std over seeds) of every method at the default settings."""
    dataset, mode, shots = scene
    methods = [m for m in METHODS if m in runs]
    ids = next(iter(runs.values()))[0]["class_ids"]
    lines = [f"### {dataset}, {shots} shots, {mode} split: per-class accuracy % (default settings)", "",
             "| class | test pixels, mean over seeds | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    reference = runs[methods[0]]
    for j, class_id in enumerate(ids):
        support = np.mean([r["support"][j] for r in reference])
        cells = []
        for m in methods:
            values = [r["per_class"][j] for r in runs[m] if r["support"][j] > 0]
            cells.append(_mean_std(values, digits=1) if values else "no test pixel")
        label = f"{class_id} {names.get(class_id, '')}".strip()
        lines.append(f"| {label} | {support:.0f} | " + " | ".join(cells) + " |")
    return lines


def _table(scene: tuple, tag: str, methods: dict) -> list[str]:
    """One markdown table; a method's delta to CSSD is the mean over the seeds both ran."""
    dataset, mode, shots = scene
    lines = [f"### {dataset}, {shots} shots, {mode} split ({'networks: ' + tag if tag else 'default settings'})", "",
             "| method | seeds | OA % | AA % | kappa | delta OA vs cssd, same seeds | s per run |",
             "|---|---|---|---|---|---|---|"]
    reference = {r["seed"]: r["oa"] for r in methods.get("cssd", [])}
    for method in [m for m in METHODS if m in methods]:
        runs = methods[method]
        oa, aa, kappa = (np.array([r[k] for r in runs]) for k in ("oa", "aa", "kappa"))
        shared = [r["oa"] - reference[r["seed"]] for r in runs if r["seed"] in reference]
        delta = f"{100 * np.mean(shared):+.2f} ({len(shared)})" if shared and method != "cssd" else ""
        lines.append(f"| {method} | {len(runs)} | {100 * oa.mean():.2f} ± {100 * oa.std():.2f} | "
                     f"{100 * aa.mean():.2f} ± {100 * aa.std():.2f} | {kappa.mean():.4f} ± {kappa.std():.4f} | "
                     f"{delta} | {np.mean([r['seconds'] for r in runs]):.0f} |")
    return lines


def main() -> None:
    """Parse the command line and run or report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=datasets.DATASETS)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=10, help="how many of the fixed seeds 0..9 (default 10)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--disjoint", action="store_true", help="spatially disjoint fields for training and test")
    parser.add_argument("--epochs", type=int, help="(default: the package's, see TrainConfig.epochs_for)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", type=_settings, default={}, metavar="'FIELD=VALUE ...'",
                        help="TrainConfig changes for the networks, e.g. 'schedule=cosine tau=1' (tuning sweeps)")
    parser.add_argument("--curve", action="store_true",
                        help="also record the test OA of 2000 test pixels after every epoch (for choosing epochs "
                             "on the tuning scenes; slower)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    parser.add_argument("--out", help="JSON-lines file of runs (default results/accuracy/<dataset>.jsonl)")
    parser.add_argument("--report", metavar="FOLDER", help="print the tables of the runs saved in FOLDER")
    parser.add_argument("--figures", metavar="FOLDER",
                        help="write maps next to the reference and confusion matrices of the first seed here")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    if not args.dataset:
        parser.error("--dataset is required unless --report is given")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
          flush=True)
    run(args)


if __name__ == "__main__":
    main()
