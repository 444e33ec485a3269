"""Few-shot accuracy of CSSD, its ablations and baselines on the classic scenes.

Protocol of the few-shot literature: for each seed, k labelled pixels per class (a class with
fewer than 2k pixels gives half of them), train, test on all other labelled pixels; every
method gets the same samples in a seed. With --disjoint, the field-disjoint split
(:func:`cssd_geo.sampling.field_disjoint_split`): half of each class's 8-connected fields give
its k shots, round-robin, and only the other fields are tested, leaving out test pixels within
--gap pixels of a training pixel (default: the reach of CSSD's window, so that no tested pixel's
window holds a training pixel). Random pixel splits let training windows cover test pixels.

    python benchmarks/accuracy.py --dataset indian_pines --shots 16 --seeds 10
    python benchmarks/accuracy.py --report results/accuracy    # tables from the saved runs

Each run (dataset, mode, shots, method, seed) is appended as one JSON line to
--out (default results/accuracy/<dataset>.jsonl); runs already there are skipped, so an
interrupted sweep resumes. Reads the data from --data (default ../shared/data).

Methods (METHODS): CSSD, its ablations and a plain CNN, all seeing the same input window as
CSSD under the run's settings (patch + 2 x receptive radius, 19 x 19 at the defaults): a method
that removes SpeFR gets a patch wider by twice SpeFR's radius (see :func:`method_config`);
``spectral``, CSSD's auxiliary centre-spectrum head alone (``CSSD.centre_logits`` on every
pixel's spectrum), taken from the very model trained for ``cssd``: one training writes both
lines, whichever of the two is asked for; and baselines on spectra: SVM-RBF (``svm``), random
forest (``rf``), linear discriminant analysis with a Ledoit-Wolf shrunk covariance (``lda``),
and ``svm_spatial``, the same SVM-RBF grid search on each pixel's spectrum
concatenated with its 5 x 5 mean spectrum (mirrored at the scene border, like the networks'
windows), standardised: 2 x bands features (400 on Indian Pines, few enough for an RBF SVM, so
no PCA). Each network line also records its auxiliary head's OA on the same test pixels
(``aux_oa``) and the share of test pixels where the two heads disagree (``head_disagreement``);
both are null for the plain CNN (trained without that head) and in lines saved before they were
recorded, and ``taught``, the share of the unlabelled windows drawn during training on which
the teacher was confident enough to teach. Saved lines are matched by their full settings, so
lines of an older definition of a method (e.g. no_spefr and cnn with patch 11, a 15 x 15
window) are not taken as today's and are reported under their own window. ``--epochs 1``
makes a quick smoke run (recorded in the settings).

In the report ± is the sample standard deviation over seeds (ddof = 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import re
import sys
import time
from collections import Counter
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
from cssd_geo.io.scene import mask_invalid, scene_nodata  # noqa: E402
from cssd_geo.metrics import compute_metrics  # noqa: E402
from cssd_geo.model import CSSD, ModelConfig  # noqa: E402
from cssd_geo.model.cssd import combine_heads  # noqa: E402
from cssd_geo.selection import HEADS, cross_validate  # noqa: E402
from cssd_geo.training import train_model  # noqa: E402

SEEDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
# name: option changes from the defaults (CSSD; names as cssd_geo.config.option_names), or None
# for the baselines on spectra. The patch is not among the changes: every network gets the one
# that gives it CSSD's window (method_config).
METHODS: dict[str, dict[str, Any] | None] = {
    "cssd": {},
    "eps0": {"eps": 0.0},  # ablation: no self-distillation
    "mean_pool": {"pooling": "mean"},  # ablation: SAP -> average pooling
    "no_spefr": {"refiner_depth": 0},  # ablation: no SpeFR
    "cnn": {"refiner_depth": 0, "pooling": "mean", "auxiliary": False, "heads": "window"},  # plain CNN
    "labels_only": {"unlabelled": 0},  # ablation: no self-distillation on unlabelled windows
    "dilation_spefr": {"refiner": "dilation"},  # SpeFR as grey-scale dilation (model files before format 3)
    "spectral": {},  # the auxiliary centre-spectrum head of the cssd model (the same training)
    "window_head": {},  # the window head of the cssd model alone (the same training; heads=window)
    "both_heads": {},  # the mean of both heads' probabilities of the cssd model (the same training; heads=both)
    "svm": None,
    "svm_spatial": None,  # SVM-RBF on the spectrum and its NEIGHBOURHOOD x NEIGHBOURHOOD mean
    "rf": None,
    "lda": None,  # linear discriminant analysis, within-class covariance shrunk (Ledoit-Wolf)
}
# 2: SpeFR weights the blocks of its structuring element (the method's form), the auxiliary head
# learns the labels alone, unlabelled windows join training (--unlabelled). A saved line without
# a ``network`` setting ran version 1, i.e. these settings:
# 3: the same network and losses as 2, trained about twice as fast: SpeFR's hand-written backward
# pass (on a tie between blocks the first takes the gradient) and each step's unlabelled windows
# centred within one small neighbourhood.
NETWORK_VERSION = 3
BEFORE_NETWORK_2 = {"network": 1, "refiner": "dilation", "unlabelled": 0}
# options measured and then removed from the package, with the value that is today's behaviour: a
# saved run at that value is a run at today's settings, at another value a setting of its own
RETIRED = {"spectral_augmentation": False,  # issue 16: no gain on the Berlin field-disjoint split
           "teacher": "spectral",  # issue 15: a discriminant teacher did not raise the tuning scenes
           "co_training": False,  # issue 15: neither did co-training
           "ema_teacher": 0.0,  # issue 15: nor a moving-average teacher
           "decorrelation": 0.0,  # issue 15: whitened bands weakened the centre-spectrum classifier
           "labelled_statistics": False}  # issue 15: labelled-only BatchNorm statistics did not raise Berlin
# the maps --patch auto chose among before the centre-spectrum classifier became a candidate (a saved
# auto run that does not record ``auto_heads`` chose among these)
AUTO_HEADS_BEFORE = "window,both"
AUX_HEAD = "spectral"  # the method predicted by a trained network's auxiliary head
WINDOW_HEAD = "window_head"  # the method predicted by the cssd network's window head alone
BOTH_HEADS = "both_heads"  # the method predicted by the mean of the cssd network's two heads
SHARED = ("cssd", AUX_HEAD, WINDOW_HEAD, BOTH_HEADS)  # one training writes the lines of all four
NEIGHBOURHOOD = 5  # side of svm_spatial's mean spectrum
# the project's accuracy targets: dataset, shots, split, CSSD OA % at least, points above SVM-RBF at least
TARGETS: tuple[tuple[str, int, str, float | None, float | None], ...] = (
    ("indian_pines", 16, "random", 92.0, None), ("indian_pines", 5, "random", 85.5, None),
    ("berlin", 5, "random", None, 3.0), ("salinas_a", 5, "random", 99.5, None))
# issue 16: CSSD at least this many points above the best baseline on spectra (the one with the
# highest mean OA over the seeds) on the same samples of a field-disjoint split
DISJOINT_TARGETS: tuple[tuple[str, int, str, float], ...] = (
    ("indian_pines", 16, "disjoint-gap9", 5.0), ("berlin", 5, "disjoint-gap4", 5.0))
BASELINES = ("svm", "svm_spatial", "rf", "lda")
RANDOM_NOTE = ("Random split: the training pixels are drawn among all labelled pixels, so the windows around them "
               "share pixels with the test fields; random-split OA measures how well a method fills in fields "
               "that gave samples (compare the disjoint split).")


def split_note(mode: str) -> str | None:
    """What a split's OA measures, for the tables of that split (None for a split without a note)."""
    if mode == "random":
        return RANDOM_NOTE
    if mode.startswith("disjoint-gap"):
        gap = mode.removeprefix("disjoint-gap")
        return ("Field-disjoint split: each class's shots are drawn round-robin over half of its 8-connected fields "
                "(at least one, at most k); only the other fields are tested, and of them only pixels more than "
                f"{gap} pixels from every training pixel. A class with one field is trained on and never tested "
                "(\"no test pixel\" in the per-class table); OA, AA and kappa are over the tested classes.")
    return None


def metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[ClassInfo]) -> dict[str, Any]:
    """The run's figures (as saved in the JSON lines) from :func:`cssd_geo.metrics.compute_metrics`;
    a class without test pixels has per-class accuracy NaN."""
    result = compute_metrics(truth, predicted, classes)
    return {"oa": result.overall_accuracy, "aa": result.average_accuracy, "kappa": result.kappa,
            "per_class": [float("nan") if c["accuracy"] is None else c["accuracy"] for c in result.per_class],
            "support": [c["support"] for c in result.per_class], "confusion": result.confusion_matrix}


def run_network(data: datasets.LabelledScene, rows: np.ndarray, cols: np.ndarray, config: TrainConfig,
                curve: np.ndarray | None = None, history: list | None = None, choice: dict | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Class ids of every pixel from a network trained on (rows, cols): its prediction (as its
    ``heads`` setting makes it), its auxiliary centre-spectrum head's alone (``CSSD.centre_logits``
    on each pixel's spectrum), its window head's alone and the mean of both heads (the last
    three None for a network trained without the auxiliary head). With ``curve`` (a mask of
    pixels), their overall accuracy after each epoch goes into ``history``. With
    ``config.auto_patch`` the patch and heads come from leave-fields-out cross-validation on the
    training pixels alone (their fields are the reference's connected fields, as a user's
    labelled fields would be); ``choice`` gets what it chose and estimated."""
    ids = np.array([c.id for c in data.classes])
    index = {c.id: k for k, c in enumerate(data.classes)}
    targets = np.array([index[v] for v in data.labels[rows, cols]])
    if config.auto_patch:
        estimate = cross_validate(data.scene, rows, cols, targets, data.fields()[rows, cols], data.classes, config,
                                  torch.device("cpu"))
        if choice is not None:
            choice.update(chosen_patch=estimate.patch, chosen_heads=estimate.heads, expected_oa=estimate.expected_oa,
                          cv_seconds=estimate.seconds, cv_scores=estimate.scores,
                          cv_held_out=estimate.held_out_pixels)
        if estimate.patch is not None and estimate.heads is not None:
            config = dataclasses.replace(config, model=dataclasses.replace(
                config.model, patch=estimate.patch, heads=estimate.heads))  # type: ignore[arg-type]
    held_out = None
    if curve is not None:
        r, c = np.nonzero(curve)
        pick = sampling.validation_subset(len(r), config.seed)
        r, c = r[pick], c[pick]
        held_out = (r, c, np.array([index[v] for v in data.labels[r, c]]))
    model, _ = train_model(data.scene, sampling.Samples(rows, cols, targets), data.classes, config,
                           held_out=held_out, history=history)
    if not config.model.auxiliary:
        return ids[predict_logits(model, data.scene, chunk=64).argmax(0)], None, None, None
    # one pass per head over the scene: the map of both heads is combined from them exactly as
    # CSSD.dense_logits combines them, instead of a third pass
    heads = model.config.heads
    model.config = dataclasses.replace(model.config, heads="window")
    window = torch.from_numpy(predict_logits(model, data.scene, chunk=64))
    model.config = dataclasses.replace(model.config, heads=heads)
    cube = mask_invalid(np.array(data.scene.values, dtype=np.float32), scene_nodata(data.scene))
    spectra = torch.from_numpy(np.ascontiguousarray(cube.reshape(cube.shape[0], -1).T))
    model.eval()
    with torch.no_grad():
        aux = model.centre_logits(spectra.to(model.band_mean.device)).cpu().T.reshape(window.shape)
    both = combine_heads(window[None], aux[None])[0]
    logits = {"both": both, "spectral": aux}.get(heads, window)
    return (ids[logits.argmax(0).numpy()], ids[aux.argmax(0).numpy()], ids[window.argmax(0).numpy()],
            ids[both.argmax(0).numpy()])


def run_spectral(data: datasets.LabelledScene, rows: np.ndarray, cols: np.ndarray, method: str,
                 seed: int) -> np.ndarray:
    """Class ids of every pixel from an SVM-RBF (C, gamma by cross-validation), a random
    forest or a shrinkage LDA (the within-class covariance shrunk by the Ledoit-Wolf formula,
    which few shots need: 30 pixels cannot estimate a full covariance of 177 bands) on
    standardised spectra; ``svm_spatial``: the SVM-RBF on each spectrum followed by
    the mean spectrum of the NEIGHBOURHOOD x NEIGHBOURHOOD pixels around it (mirrored at the
    scene border, as the networks' windows are)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    cube = np.asarray(data.scene.values, dtype=np.float64)
    if method == "svm_spatial":
        from scipy import ndimage

        means = ndimage.uniform_filter(cube, size=(1, NEIGHBOURHOOD, NEIGHBOURHOOD), mode="mirror")
        cube = np.concatenate([cube, means])
    spectra = cube.reshape(cube.shape[0], -1).T
    x, y = cube[:, rows, cols].T, data.labels[rows, cols]
    if method in ("svm", "svm_spatial"):
        folds = min(3, int(np.unique(y, return_counts=True)[1].min()))
        grid = {"svc__C": [1, 10, 100, 1000, 10000], "svc__gamma": ["scale", 1e-3, 1e-2, 1e-1]}
        pipe = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
        model = GridSearchCV(pipe, grid, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)) \
            if folds >= 2 else pipe
    elif method == "lda":
        model = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    else:
        model = RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=-1)
    model.fit(x, y)
    return model.predict(spectra).reshape(cube.shape[1:])


def run(args: argparse.Namespace) -> None:
    """Run every method on every seed not yet in the results file, appending one JSON line per run."""
    data = datasets.load(args.dataset, args.data)
    fields = data.fields() if args.disjoint else None
    gap = _window(network_config({}).model) // 2 if args.gap is None else args.gap
    mode = f"disjoint-gap{gap}" if args.disjoint else "random"
    out = args.out or os.path.join(HERE, "..", "results", "accuracy", f"{args.dataset}.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    done = set()
    if os.path.exists(out):
        with open(out) as f:
            done = {_key(r, r["seed"], r["train_config"]) for r in map(json.loads, f)}
    class_ids = [c.id for c in data.classes]
    torch.set_num_threads(args.threads or torch.get_num_threads())
    for seed in SEEDS[: args.seeds]:
        if fields is None:
            rows, cols, test = sampling.few_shot_split(data.labels, args.shots, seed)
        else:
            rows, cols, test = sampling.field_disjoint_split(data.labels, args.shots, seed, fields, gap)
        if not test.any():
            raise SystemExit(f"{args.dataset} seed {seed}: the disjoint split leaves no pixel to test (every class "
                             f"is one connected field, or every test pixel is within --gap {gap} of a training "
                             "pixel); use the random split or a smaller --gap")
        options = {"epochs": args.epochs, "device": args.device, "seed": seed, **args.set}
        run_config = _settings_of(network_config(options))  # CSSD's: the window every network sees
        for method in args.methods:
            config = method_config(method, options)
            settings = None if config is None else _settings_of(config)
            keys = {name: _key({"dataset": args.dataset, "mode": mode, "shots": args.shots, "method": name}, seed,
                               settings) for name in (SHARED if method in SHARED else (method,))}
            if keys[method] in done:
                continue
            if method == AUX_HEAD and config is not None and not config.model.auxiliary:
                raise SystemExit(f"{method}: the networks are set to train without the auxiliary head "
                                 "(--set auxiliary=false), so there is no centre-spectrum head to predict with")
            start = time.perf_counter()
            history: list = []
            choice: dict = {}
            aux = window = both = None
            if config is None:
                predicted = run_spectral(data, rows, cols, method, seed)
            else:
                predicted, aux, window, both = run_network(data, rows, cols, config,
                                                           test if args.curve else None, history, choice)
            seconds = time.perf_counter() - start
            heads = {AUX_HEAD: aux, WINDOW_HEAD: window, BOTH_HEADS: both}
            for name in keys:
                labels = heads.get(name, predicted)
                if keys[name] in done or labels is None:
                    continue
                assert labels is not None
                result = {"dataset": args.dataset, "mode": mode, "shots": args.shots, "method": name, "seed": seed,
                          "train_config": settings, "train_pixels": int(len(rows)), "test_pixels": int(test.sum()),
                          "seconds": seconds, "class_ids": class_ids, "class_names": [c.name for c in data.classes],
                          "curve": history if args.curve and name != AUX_HEAD else None, **choice,
                          "taught": _taught(history),
                          **metrics(data.labels[test], labels[test], data.classes)}
                if config is not None:
                    result.update({"run_config": run_config, "window": _window(config.model),
                                   **head_figures(data.labels[test],
                                                  (predicted if window is None else window)[test],
                                                  None if aux is None else aux[test])})
                with open(out, "a") as f:
                    f.write(json.dumps(result) + "\n")
                done.add(keys[name])
                if args.figures and seed == SEEDS[0]:
                    _figures(args.figures, data, labels, test, result, name, mode, args.shots)
                heads_text = "" if result.get("aux_oa") is None else \
                    f" aux OA {100 * result['aux_oa']:6.2f} heads differ {100 * result['head_disagreement']:5.2f} %"
                print(f"{args.dataset} {mode} k={args.shots} seed {seed} {name:<11} OA {100 * result['oa']:6.2f} "
                      f"AA {100 * result['aa']:6.2f} kappa {result['kappa']:.4f}{heads_text} ({seconds:.0f} s)",
                      flush=True)


def _taught(history: list[dict[str, Any]]) -> float | None:
    """The share of the unlabelled windows drawn during training on which the teacher was
    confident enough to teach (None without unlabelled windows)."""
    shares = [h["taught"] for h in history if h.get("taught") is not None]
    return float(np.mean(shares)) if shares else None


def head_figures(truth: np.ndarray, window: np.ndarray, aux: np.ndarray | None) -> dict[str, float | None]:
    """The auxiliary (centre-spectrum) head's OA on the test pixels and the share of them on
    which it and the window head disagree (class ids of the test pixels; None without that head)."""
    if aux is None:
        return {"aux_oa": None, "head_disagreement": None}
    return {"aux_oa": float(np.mean(aux == truth)), "head_disagreement": float(np.mean(aux != window))}


def _figures(folder: str, data: datasets.LabelledScene, predicted: np.ndarray, test: np.ndarray, result: dict,
             method: str, mode: str, shots: int) -> None:
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


def method_config(method: str, options: dict[str, Any]) -> TrainConfig | None:
    """The TrainConfig of ``method`` in a run with these options (seed, epochs, --set): CSSD's
    with the method's changes, and the patch that keeps CSSD's input window (patch + 2 x
    receptive radius) whatever the changes do to the radius; without SpeFR (no_spefr, cnn) the
    patch grows by twice SpeFR's radius (11 -> 15 at the defaults, a 19 x 19 window). None for
    the baselines on spectra."""
    changes = METHODS[method]
    if changes is None:
        return None
    window = _window(network_config(options).model)
    config = network_config({**options, **changes})
    patch = window - 2 * _radius(config.model)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, patch=patch))


@functools.cache
def _radius(model: ModelConfig) -> int:
    """Receptive radius in pixels (SpeFR + SpaFE + classifier) of a CSSD model with these
    settings, read off its layers (a throwaway 32-band model; the patch plays no part)."""
    with torch.random.fork_rng(devices=[]):
        return int(CSSD(32, 2, dataclasses.replace(model, patch=3)).radius)


def _window(model: ModelConfig) -> int:
    """Side of the input window of a CSSD model with these settings."""
    return model.patch + 2 * _radius(model)


def _known(settings: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from saved settings (options the package no longer has are left out)."""
    names = set(option_names(TrainConfig))
    return network_config({k: v for k, v in settings.items() if k in names})


def _configured_window(run: dict[str, Any]) -> int:
    """The input window of a saved network line's settings (saved or, for older lines, from them)."""
    return int(run.get("window") or _window(_known(_complete(run["train_config"])).model))


def _line_window(run: dict[str, Any]) -> int:
    """The input window a saved network line saw: its settings', or the one --patch auto chose."""
    chosen = run.get("chosen_patch")
    window = _configured_window(run)
    return window - int(run["train_config"]["patch"]) + int(chosen) if chosen else window


def _run_config(run: dict[str, Any]) -> dict[str, Any]:
    """The settings of the CSSD whose window a saved network line saw (the run's options
    before the method's changes): as saved, or for a line saved before they were, its own
    settings with the method's changes back at CSSD's defaults and the patch that gives that
    CSSD the line's window (an old no_spefr line with patch 11 saw 15 x 15: CSSD's patch 7)."""
    defaults = _settings_of(TrainConfig())
    if run.get("run_config") is not None:
        return _complete(run["run_config"])
    base = {**_complete(run["train_config"]), **{k: defaults[k] for k in METHODS[run["method"]] or {}}}
    base["patch"] = _configured_window(run) - 2 * _radius(_known(base).model)
    return base


def _settings_of(config: TrainConfig) -> dict[str, Any]:
    """What makes one network run differ from another besides the seed: every training and
    model option of ``config`` but those of NOT_SETTINGS, by option name, and the version of
    the network code (``network``, see NETWORK_VERSION)."""
    values = {**asdict(config), **asdict(config.model)}
    settings = {name: values[name] for name in option_names(TrainConfig) if name not in NOT_SETTINGS}
    if config.auto_patch:  # the maps --patch auto chooses among are part of what it is
        settings["auto_heads"] = ",".join(HEADS)
    return {**settings, "network": NETWORK_VERSION}


def _complete(saved: dict[str, Any]) -> dict[str, Any]:
    """The full settings of a saved run: what it recorded; for an option it did not record,
    the behaviour the code had before that option existed (BEFORE_NETWORK_2), else today's default;
    a RETIRED option at today's behaviour is left out."""
    full = {**_settings_of(TrainConfig()), **BEFORE_NETWORK_2, **saved}
    if full.get("auto_patch") and "auto_heads" not in full:
        full["auto_heads"] = AUTO_HEADS_BEFORE
    return {k: v for k, v in full.items() if not (k in RETIRED and v == RETIRED[k])}


def _key(run: dict[str, Any], seed: int, settings: dict[str, Any] | None) -> tuple[Any, ...]:
    """What identifies a run in the JSON-lines file: scene, split, shots, method, seed and
    the full network settings (so runs made with other defaults are never taken as done).
    An option a saved run does not record is newer than the run, which had that option's
    default behaviour (a new option's default keeps the old behaviour)."""
    full = None if settings is None else _complete(settings)
    return (run["dataset"], run["mode"], run["shots"], run["method"], seed, json.dumps(full, sort_keys=True))


def _tag(run: dict) -> str:
    """How the settings of a network line's run (:func:`_run_config`) differ from the package's
    current defaults, as sortable text: '' when they are the defaults (and for the baselines);
    the patch appears as the window every network of the run sees ('window=15')."""
    if run["train_config"] is None:
        return ""
    defaults, base = _settings_of(TrainConfig()), _run_config(run)
    items = [f"{k}={v}" for k, v in base.items() if k != "patch" and defaults.get(k) != v]
    window = _window(_known(base).model)
    if window != _window(TrainConfig().model):
        items.append(f"window={window}")
    return " ".join(sorted(items))


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
    """Markdown of every saved run in ``folder`` (mean ± sample std over seeds): when some run
    is at the default settings, an overview (OA of every method on every dataset, split and
    shots, at the default settings), the differences from CSSD, the targets, the auxiliary
    head's accuracy, per-seed and per-class accuracy at the default settings; then one table
    per dataset, split, shots and network setting (epochs, --set, window); the baselines on
    spectra, which have no such setting, appear in each table of their dataset, split and shots.
    Lines of methods this script no longer has are left out."""
    rows = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                rows += [r for r in map(json.loads, f) if r["method"] in METHODS]
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
    lines = _notes() + [""]
    if any(defaults.values()):  # a folder of tuning runs alone has no run at the default settings to summarise
        lines += _overview(defaults) + [""] + _deltas(defaults) + [""] + _targets(defaults) + [""]
        lines += _heads(defaults) + [""]
    estimates = _estimates(networks)
    lines += estimates + ([""] if estimates else [])
    for scene in scenes:
        names = _class_names(scene[0], [r for r in rows if r["dataset"] == scene[0]])
        if defaults[scene]:
            lines += _seeds(scene, defaults[scene]) + [""] + _per_class(scene, defaults[scene], names) + [""]
    for scene in scenes:
        for tag, methods in sorted(networks.get(scene, {"": {}}).items()):
            methods = {**methods, **spectral.get(scene, {})}
            lines += _table(scene, tag, methods) + [""]
    return "\n".join(lines)


REPORT_SECTION = re.compile(r"(<!-- report: (?P<folder>[^ ]+) -->\n)(?P<body>.*?)(<!-- end report -->)", re.DOTALL)


def generated_doc(text: str, base: str) -> str:
    """``text`` (Markdown) with each section between '<!-- report: FOLDER -->' and
    '<!-- end report -->' replaced by :func:`report` of FOLDER (relative to the repository
    root, the folder above ``base``'s docs/ when ``base`` is docs/)."""
    root = os.path.dirname(base) if os.path.basename(base) == "docs" else base
    return REPORT_SECTION.sub(
        lambda m: m.group(1) + report(os.path.join(root, m.group("folder"))) + "\n" + m.group(4), text)


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof = 1); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _mean_std(values: Any, scale: float = 100.0, digits: int = 2, signed: bool = False) -> str:
    """'mean ± s' of the finite values times ``scale``, s the sample standard deviation
    (ddof = 1; 'n/a' for a single value)."""
    v = np.asarray(values, dtype=float) * scale
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    std = f"{_std(v):.{digits}f}" if v.size > 1 else "n/a"
    return f"{v.mean():{'+' if signed else ''}.{digits}f} ± {std}"


def _default_window() -> str:
    model = TrainConfig().model
    w = _window(model)
    return f"{w} x {w} pixels (CSSD's patch {model.patch} + 2 x its receptive radius {_radius(model)})"


def _notes() -> list[str]:
    """What every table below shares."""
    return [f"± is the sample standard deviation over the seeds (ddof = 1). At the default settings every network "
            f"method sees the same input window, {_default_window()}: no_spefr and cnn, which have no SpeFR, get a "
            f"patch wider by twice SpeFR's radius. spectral is the auxiliary centre-spectrum head of the very CSSD "
            f"models trained for cssd, on each pixel's spectrum alone; svm, rf and lda classify the pixel's spectrum, "
            f"svm_spatial the spectrum and its {NEIGHBOURHOOD} x {NEIGHBOURHOOD} mean spectrum."]


def _overview(defaults: dict) -> list[str]:
    """OA % (mean ± std, seeds) of every method at the default settings, a row per scene."""
    methods = [m for m in METHODS if any(m in runs for runs in defaults.values())]
    lines = ["### Overview: OA % at the default settings (mean ± std over the seeds run, seeds in brackets)", "",
             f"Every network method sees {_default_window()}. {RANDOM_NOTE}", "",
             "| dataset | k | split | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for (dataset, mode, shots), runs in sorted(defaults.items()):
        cells = [f"{_mean_std([r['oa'] for r in runs[m]])} ({len(runs[m])})" if m in runs else "" for m in methods]
        lines.append(f"| {dataset} | {shots} | {mode} | " + " | ".join(cells) + " |")
    return lines


def _paired(runs: dict, method: str, against: str = "cssd") -> np.ndarray:
    """OA of ``method`` minus that of ``against`` in points, on each seed both ran."""
    reference = {r["seed"]: r["oa"] for r in runs.get(against, [])}
    return np.array([100 * (r["oa"] - reference[r["seed"]]) for r in runs.get(method, []) if r["seed"] in reference])


def _deltas(defaults: dict) -> list[str]:
    """OA difference (points, mean ± std over the seeds both ran) of every other method against
    CSSD, a row per scene at the default settings, with the seeds on which it was below CSSD."""
    methods = [m for m in METHODS if m != "cssd" and any(m in runs for runs in defaults.values())]
    lines = ["### Against CSSD: OA difference in points, mean ± std over the seeds both ran (seeds; on how many "
             "of them the method was below CSSD)", "", RANDOM_NOTE, "",
             "| dataset | k | split | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for (dataset, mode, shots), runs in sorted(defaults.items()):
        cells = []
        for m in methods:
            diffs = _paired(runs, m)
            cells.append(f"{_mean_std(diffs, scale=1, signed=True)} ({len(diffs)}; {int((diffs < 0).sum())} below)"
                         if len(diffs) else "")
        if any(cells):
            lines.append(f"| {dataset} | {shots} | {mode} | " + " | ".join(cells) + " |")
    return lines


def _extremes(runs: list) -> str:
    """'lowest x % (seed s), best y % (seed t)' of the runs' OA."""
    low, high = min(runs, key=lambda r: r["oa"]), max(runs, key=lambda r: r["oa"])
    return f"lowest {100 * low['oa']:.2f} % (seed {low['seed']}), best {100 * high['oa']:.2f} % (seed {high['seed']})"


def _targets(defaults: dict) -> list[str]:
    """The project's targets (TARGETS) against CSSD at the default settings; a target is met
    when the mean over the seeds run reaches it."""
    lines = ["### Targets (CSSD at the default settings; met when the mean over the seeds reaches the target)", "",
             RANDOM_NOTE, "", "| target | measured | |", "|---|---|---|"]
    for dataset, shots, mode, minimum, margin in TARGETS:
        runs = defaults.get((dataset, mode, shots), {})
        name = f"{dataset}, {shots} shots, {mode} split"
        cssd = runs.get("cssd", [])
        if minimum is None:
            pass
        elif not cssd:
            lines.append(f"| {name}: OA >= {minimum:g} % | not run | |")
        else:
            oa = 100 * np.array([r["oa"] for r in cssd])
            above = int((oa >= minimum).sum())
            verdict = "met" if oa.mean() >= minimum else f"**missed by {minimum - oa.mean():.2f} points**"
            lines.append(f"| {name}: OA >= {minimum:g} % | {_mean_std(oa, scale=1)} % ({len(oa)} seeds, {above} of "
                         f"them >= {minimum:g} %; {_extremes(cssd)}) | {verdict} |")
        if margin is not None:
            diffs = -_paired(runs, "svm") if "svm" in runs else np.array([])
            if not len(diffs):
                lines.append(f"| {name}: >= {margin:g} points above SVM-RBF | not run | |")
                continue
            verdict = "met" if diffs.mean() >= margin else f"**missed by {margin - diffs.mean():.2f} points**"
            lines.append(f"| {name}: >= {margin:g} points above SVM-RBF | {_mean_std(diffs, scale=1, signed=True)} "
                         f"points on the same samples ({len(diffs)} seeds; lowest {diffs.min():+.2f}) | {verdict} |")
    for dataset, shots, mode, margin in DISJOINT_TARGETS:
        runs = defaults.get((dataset, mode, shots), {})
        name = f"{dataset}, {shots} shots, {mode} split: >= {margin:g} points above the best baseline"
        done = [m for m in BASELINES if _paired(runs, m).size]
        if not done:
            lines.append(f"| {name} | not run | |")
            continue
        best = max(done, key=lambda m: float(np.mean([r["oa"] for r in runs[m]])))
        diffs = -_paired(runs, best)
        verdict = "met" if round(diffs.mean(), 2) >= margin else f"**missed by {margin - diffs.mean():.2f} points**"
        lines.append(f"| {name} | {_mean_std(diffs, scale=1, signed=True)} points against {best} on the same samples "
                     f"({len(diffs)} seeds; lowest {diffs.min():+.2f}) | {verdict} |")
    return lines


def _estimates(networks: dict) -> list[str]:
    """The leave-fields-out choice (``--patch auto``) of every network setting that made one:
    which patch and heads it chose, the expected OA it gave from the training pixels alone and
    the OA measured on the test pixels (gap: expected minus measured)."""
    lines = ["### --patch auto: the choice from the training pixels, the expected OA it gave and the measured OA "
             "(the cssd lines of each setting that made a choice)", "",
             "| dataset | k | split | setting | seeds | patch chosen (seeds) | heads chosen (seeds) | seeds with too "
             "few fields | expected OA % | measured OA %, same seeds | gap, points | cross-validation s, median |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    found = False
    for (dataset, mode, shots), settings in sorted(networks.items()):
        for tag, methods in sorted(settings.items()):
            runs = [r for r in methods.get("cssd", []) if "chosen_patch" in r]
            if not runs:
                continue
            found = True
            chosen = [r for r in runs if r["chosen_patch"] is not None]
            patches = ", ".join(f"{p} ({n})" for p, n in sorted(Counter(r["chosen_patch"] for r in chosen).items()))
            heads = ", ".join(f"{h} ({n})" for h, n in sorted(Counter(r["chosen_heads"] for r in chosen).items()))
            cells = ["", "", ""]
            if chosen:
                expected = np.array([r["expected_oa"] for r in chosen])
                measured = np.array([r["oa"] for r in chosen])
                cells = [_mean_std(expected), _mean_std(measured), _mean_std(expected - measured, signed=True)]
            lines.append(f"| {dataset} | {shots} | {mode} | {tag} | {len(runs)} | {patches} | {heads} | "
                         f"{len(runs) - len(chosen)} | {' | '.join(cells)} | "
                         f"{np.median([r['cv_seconds'] for r in runs]):.0f} |")
    return lines if found else []


def _heads(defaults: dict) -> list[str]:
    """OA of the window head and of the auxiliary centre-spectrum head of the networks that
    recorded it, and how often the two disagree, at the default settings."""
    lines = ["### The two heads of the networks: OA % of the window head and of the auxiliary centre-spectrum head "
             "(the spectral method) on the same test pixels, and the share of test pixels on which they disagree "
             "(default settings, mean ± std over the seeds that recorded them)", "", RANDOM_NOTE, "",
             "| dataset | k | split | method | seeds | map OA % | window head OA % | aux head OA % "
             "| heads disagree % |",
             "|---|---|---|---|---|---|---|---|---|"]
    found = False
    for (dataset, mode, shots), runs in sorted(defaults.items()):
        for method in [m for m in METHODS if METHODS[m] is not None
                       and m not in (AUX_HEAD, WINDOW_HEAD, BOTH_HEADS) and m in runs]:
            recorded = [r for r in runs[method] if r.get("aux_oa") is not None]
            if recorded:
                found = True
                # the window head alone: cssd's own line is the map of both heads (heads=both)
                window = {r["seed"]: r["oa"] for r in runs.get(WINDOW_HEAD, [])} if method == "cssd" else {}
                window_oa = [window.get(r["seed"], r["oa"]) for r in recorded]
                lines.append(f"| {dataset} | {shots} | {mode} | {method} | {len(recorded)} | "
                             f"{_mean_std([r['oa'] for r in recorded])} | {_mean_std(window_oa)} | "
                             f"{_mean_std([r['aux_oa'] for r in recorded])} "
                             f"| {_mean_std([r['head_disagreement'] for r in recorded])} |")
    if not found:
        lines.append("| no run at the default settings records the auxiliary head (aux_oa) yet | | | | | | | | |")
    return lines


def _seeds(scene: tuple, runs: dict) -> list[str]:
    """OA % of every method on each seed at the default settings, with the lowest and best seed."""
    dataset, mode, shots = scene
    methods = [m for m in METHODS if m in runs]
    seeds = sorted({r["seed"] for m in methods for r in runs[m]})
    lines = [f"### {dataset}, {shots} shots, {mode} split: OA % per seed (default settings)", ""]
    if split_note(mode):
        lines += [str(split_note(mode)), ""]
    lines += ["| method | " + " | ".join(str(s) for s in seeds) + " | mean ± std | lowest (seed) | best (seed) |",
              "|---|" + "---|" * (len(seeds) + 3)]
    for m in methods:
        oa = {r["seed"]: r["oa"] for r in runs[m]}
        low, high = min(runs[m], key=lambda r: r["oa"]), max(runs[m], key=lambda r: r["oa"])
        lines.append(f"| {m} | " + " | ".join(f"{100 * oa[s]:.2f}" if s in oa else "" for s in seeds) +
                     f" | {_mean_std(list(oa.values()))} | {100 * low['oa']:.2f} ({low['seed']}) | "
                     f"{100 * high['oa']:.2f} ({high['seed']}) |")
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
    lines = [f"### {dataset}, {shots} shots, {mode} split: per-class accuracy % (default settings)", ""]
    if split_note(mode):
        lines += [str(split_note(mode)), ""]
    lines += ["| class | test pixels, mean over seeds | " + " | ".join(methods) + " |",
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


def _input(method: str, runs: list[dict[str, Any]]) -> str:
    """What a method classifies each pixel from (the table's input column), over its ``runs``."""
    if METHODS[method] is None:
        return f"spectrum + {NEIGHBOURHOOD} x {NEIGHBOURHOOD} mean" if method == "svm_spatial" else "spectrum"
    if method == AUX_HEAD:
        return "spectrum (cssd's auxiliary head)"
    if any(r.get("chosen_patch") for r in runs):
        windows = sorted({_line_window(r) for r in runs})
        return "window chosen per seed by --patch auto: " + ", ".join(f"{w} x {w}" for w in windows)
    w = _line_window(runs[0])
    return f"{w} x {w} window (patch {runs[0]['train_config']['patch']})"


def _table(scene: tuple, tag: str, methods: dict) -> list[str]:
    """One markdown table; a method's delta to CSSD is the mean over the seeds both ran, with
    the seeds on which it was below CSSD; the networks' auxiliary-head columns are over the lines
    that recorded them (how many in brackets when not all)."""
    dataset, mode, shots = scene
    windows = sorted({_line_window(r) for m, runs in methods.items() if METHODS[m] is not None and m != AUX_HEAD
                      for r in runs})
    lines = [f"### {dataset}, {shots} shots, {mode} split ({'networks: ' + tag if tag else 'default settings'})", ""]
    notes = [f"Every network method here sees {windows[0]} x {windows[0]} pixels."] if len(windows) == 1 else \
        [f"The networks here see windows of {', '.join(f'{w} x {w}' for w in windows)} pixels."] if windows else []
    if split_note(mode):
        notes.append(str(split_note(mode)))
    if notes:
        lines += [" ".join(notes), ""]
    lines += ["| method | input | seeds | OA % | AA % | kappa | delta OA vs cssd, same seeds (below) | "
              "aux head OA % | heads disagree % | s per run, median (range) |", "|---" * 10 + "|"]
    for method in [m for m in METHODS if m in methods]:
        runs = methods[method]
        shared = _paired(methods, method)
        delta = f"{shared.mean():+.2f} ({len(shared)}; {int((shared < 0).sum())} below)" \
            if len(shared) and method != "cssd" else ""
        seconds = [r["seconds"] for r in runs]
        heads = ["", ""]
        recorded = [r for r in runs if r.get("aux_oa") is not None]
        if recorded and method != AUX_HEAD:  # spectral's own OA is its aux OA
            seeds = "" if len(recorded) == len(runs) else f" ({len(recorded)})"
            heads = [_mean_std([r[k] for r in recorded]) + seeds for k in ("aux_oa", "head_disagreement")]
        lines.append(f"| {method} | {_input(method, runs)} | {len(runs)} | {_mean_std([r['oa'] for r in runs])} | "
                     f"{_mean_std([r['aa'] for r in runs])} | "
                     f"{_mean_std([r['kappa'] for r in runs], scale=1, digits=4)} | {delta} | {' | '.join(heads)} | "
                     f"{np.median(seconds):.0f} ({min(seconds):.0f}-{max(seconds):.0f}) |")
    taught = [r["taught"] for r in methods.get("cssd", []) if r.get("taught") is not None]
    if taught:
        lines += ["", f"The teacher was confident enough to teach on {_mean_std(taught)} % of the unlabelled "
                  f"windows drawn in training (cssd, {len(taught)} runs that recorded it)."]
    return lines


def main() -> None:
    """Parse the command line and run or report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=datasets.DATASETS)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=10, help="how many of the fixed seeds 0..9 (default 10)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--disjoint", action="store_true", help="spatially disjoint fields for training and test")
    parser.add_argument("--gap", type=int, help="with --disjoint: leave out test pixels within this many pixels of a "
                        "training pixel (default: half of CSSD's default window, 9)")
    parser.add_argument("--epochs", type=int, help="(default: the package's, see TrainConfig.epochs_for; e.g. 1 "
                        "for a smoke run: recorded in the run's settings, so such runs are reported apart)")
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
    parser.add_argument("--update-doc", metavar="MARKDOWN",
                        help="instead of printing, rewrite every generated section of MARKDOWN (between "
                             "'<!-- report: FOLDER -->' and '<!-- end report -->') from the runs in its FOLDER")
    parser.add_argument("--figures", metavar="FOLDER",
                        help="write maps next to the reference and confusion matrices of the first seed here")
    args = parser.parse_args()
    if args.update_doc:
        with open(args.update_doc, encoding="utf-8") as f:
            text = f.read()
        with open(args.update_doc, "w", encoding="utf-8") as f:
            f.write(generated_doc(text, os.path.dirname(os.path.abspath(args.update_doc))))
        return
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
