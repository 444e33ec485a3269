"""The ``cssd-geo`` command: parse options into a config, call the API, print errors as one line."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

from . import __version__
from .config import (
    HEADS,
    POOLINGS,
    PRECISIONS,
    REFINERS,
    SAMPLINGS,
    SCHEDULES,
    UNCERTAINTIES,
    AreaConfig,
    Config,
    EvaluateConfig,
    MapConfig,
    ModelConfig,
    PredictConfig,
    SampleConfig,
    SuggestConfig,
    TrainConfig,
    from_options,
    option_names,
)
from .errors import CssdError, first_line
from .flags import flag
from .progress import JsonLinesProgress, TqdmProgress


def _parser() -> argparse.ArgumentParser:
    """The command line. Every option's ``dest`` is the name of a config field (see
    :func:`cssd_geo.config.option_names`), so :func:`_config` builds the configs."""
    defaults_p = PredictConfig()
    p = argparse.ArgumentParser(prog="cssd-geo", description="Few-shot hyperspectral land-cover mapping with CSSD.")
    p.add_argument("--version", action="version", version=f"cssd-geo {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json-progress", action="store_true",
                   help="progress as JSON lines on stderr (for programs that run cssd-geo)")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,predict,map,suggest,evaluate,sample,area}")

    t = sub.add_parser("train", help="train a CSSD model from a scene and labelled fields")
    t.add_argument("scene", help="hyperspectral scene (GeoTIFF, ENVI, any GDAL raster, or .zarr)")
    t.add_argument("--labels", required=True, help="vector layer of labelled polygons or points")
    _training_options(t)
    _option(t, "overwrite", action="store_true", help="replace an existing model file")
    t.add_argument("-o", "--output", required=True, help="model file to write (e.g. model.cssd)")

    r = sub.add_parser("predict", help="write the class map of a scene")
    r.add_argument("model", help="model file written by 'cssd-geo train'")
    r.add_argument("scene", help="hyperspectral scene with the model's bands")
    _pixel_options(r)
    _option(r, "device", default=defaults_p.device, help="auto, cpu, cuda or cuda:N (default %(default)s)")
    _option(r, "scheduler", metavar="ADDRESS",
            help="run on this Dask distributed scheduler (needs pip install 'cssd-geo[cluster]')")
    _map_options(r)
    _option(r, "resume", action="store_true",
            help="keep each finished chunk beside the output and, run again, continue an interrupted run "
                 "(each chunk is written twice)")
    _option(r, "overwrite", action="store_true", help="replace an existing map")
    r.add_argument("-o", "--output", required=True, help="class map to write: .tif (GeoTIFF) or .zarr")

    mp = sub.add_parser("map", help="train on labelled fields and write the class map, in one step")
    mp.add_argument("scene", help="hyperspectral scene (GeoTIFF, ENVI, any GDAL raster, or .zarr)")
    mp.add_argument("--labels", required=True, help="vector layer of labelled polygons or points")
    _training_options(mp)
    _option(mp, "model_output", metavar="MODEL", help="also keep the model file here (default: not kept)")
    _map_options(mp)
    _option(mp, "overwrite", action="store_true", help="replace an existing map (and model file)")
    mp.add_argument("-o", "--output", required=True, help="class map to write: .tif (GeoTIFF) or .zarr")

    defaults_g = SuggestConfig()
    g = sub.add_parser("suggest", help="where to label next: the pixels where a model is least certain")
    g.add_argument("model", help="model file written by 'cssd-geo train'")
    g.add_argument("scene", help="hyperspectral scene with the model's bands")
    _option(g, "points", type=int, default=defaults_g.points, help="points to suggest (default %(default)s)")
    _option(g, "spacing", type=int, default=defaults_g.spacing, metavar="PIXELS",
            help="least distance between points (default: the model's window, so their windows do not overlap)")
    _option(g, "measure", choices=UNCERTAINTIES, default=defaults_g.measure,
            help="uncertainty: 1 - the gap between the two likeliest classes, or the normalised entropy "
                 "(default %(default)s)")
    _option(g, "chunk", type=int, default=defaults_g.chunk, help="chunk side of the prediction (default: from memory)")
    _pixel_options(g)
    _option(g, "device", default=defaults_g.device, help="auto, cpu, cuda or cuda:N (default %(default)s)")
    _option(g, "overwrite", action="store_true", help="replace an existing points file")
    g.add_argument("-o", "--output", required=True, help="points to write: .gpkg or .geojson")

    e = sub.add_parser("evaluate", help="accuracy of a class map against reference labels")
    e.add_argument("map", help="class map written by 'cssd-geo predict'")
    e.add_argument("--labels", required=True, help="reference vector layer")
    _option(e, "class_field", help="attribute holding the class; guessed if omitted")
    _option(e, "exclude_training", metavar="MODEL", help="leave out the pixels this model was trained on")
    _option(e, "json_path", metavar="OUT", help="also write the metrics as JSON")
    _option(e, "plot_path", metavar="PNG", help="also write the confusion matrix as a PNG")

    defaults_s, defaults_a = SampleConfig(), AreaConfig()
    sp = sub.add_parser("sample", help="draw a stratified random sample of points from a class map, to label")
    sp.add_argument("map", help="class map written by 'cssd-geo predict'")
    _option(sp, "points", type=int, default=defaults_s.points, help="points in all (default %(default)s)")
    _option(sp, "min_per_class", type=int, default=defaults_s.min_per_class, metavar="N",
            help="at least this many points in every mapped class; the rest in proportion to the mapped area "
                 "(default %(default)s)")
    _option(sp, "seed", type=int, default=defaults_s.seed, help="random seed (default %(default)s)")
    _option(sp, "overwrite", action="store_true", help="replace an existing sample")
    sp.add_argument("-o", "--output", required=True, help="points to write: .gpkg or .geojson")

    a = sub.add_parser("area", help="error-adjusted area and accuracy, with 95 %% intervals, from labelled "
                                    "sample points")
    a.add_argument("map", help="class map written by 'cssd-geo predict'")
    a.add_argument("--labels", required=True, help="reference points (e.g. from 'cssd-geo sample', labelled)")
    _option(a, "class_field", default=defaults_a.class_field,
            help="attribute holding each point's true class (default %(default)s)")
    _option(a, "json_path", metavar="OUT", help="also write the estimates as JSON")
    _option(a, "csv_path", metavar="OUT", help="also write the per-class table as CSV")
    return p


def _training_options(t: argparse.ArgumentParser) -> None:
    """Every option of TrainConfig and its ModelConfig but ``overwrite`` (train and map)."""
    defaults_t, defaults_m = TrainConfig(), ModelConfig()
    _option(t, "class_field", help="attribute holding the class (integer or text); guessed if omitted")
    _option(t, "bands", metavar="LIST",
            help="bands to use: numbers and ranges (1-50,60) or wavelength ranges in nm (400-1300); "
                 "default: every band with data that the file does not flag bad")
    _option(t, "exclude_bands", metavar="LIST",
            help="bands to leave out, the same way (e.g. 1340-1460,1790-1960)")
    _pixel_options(t)
    _option(t, "shots", type=int, default=defaults_t.shots,
            help="labelled pixels per class (default %(default)s)")
    _option(t, "sampling", choices=SAMPLINGS, default=defaults_t.sampling,
            help="random pixels, or window centres on a stride grid (default %(default)s)")
    _option(t, "grid_stride", type=int, default=defaults_t.grid_stride,
            help="stride of --sampling grid (default %(default)s)")
    _option(t, "epochs", type=int, default=defaults_t.epochs,
            help="(default: 50, more when there are few samples: at least 150 optimiser steps)")
    _option(t, "batch_size", type=int, default=defaults_t.batch_size, help="(default %(default)s)")
    _option(t, "learning_rate", type=float, default=defaults_t.learning_rate,
            help="Adam learning rate (default %(default)s)")
    _option(t, "schedule", choices=SCHEDULES, default=defaults_t.schedule,
            help="learning rate: cosine decay to 0, or halve when the loss stalls (default %(default)s)")
    _option(t, "unlabelled", type=int, default=defaults_t.unlabelled, metavar="N",
            help="unlabelled windows per training step on which the centre-spectrum classifier teaches "
                 "the window classifier; 0: labelled pixels only (default %(default)s)")
    _option(t, "teacher_threshold", type=float, default=defaults_t.teacher_threshold, metavar="P",
            help="confidence the centre-spectrum classifier needs on an unlabelled window (default "
                 "%(default)s)")
    _option(t, "self_training", action="store_true",
            help="on the unlabelled windows the centre-spectrum classifier also learns its own confident "
                 "labels, read on the clean spectrum, from the augmented one")
    _option(t, "seed", type=int, default=defaults_t.seed, help="(default %(default)s)")
    _option(t, "device", default=defaults_t.device, help="auto, cpu, cuda or cuda:N (default %(default)s)")
    m = t.add_argument_group("model")
    _option(m, "patch", type=_patch, default=defaults_m.patch,
            help="odd pooled window side P, or 'auto': P (3, 5, 7 or 11) and --heads chosen by leave-fields-out "
                 "cross-validation on the labels, which also estimates the accuracy on unlabelled fields "
                 "(about 1.5 times the training time more; default %(default)s)")
    _option(m, "auto_patch", action="store_true", help="the same as --patch auto")
    _option(m, "se_size", type=int, default=defaults_m.se_size,
            help="odd side of SpeFR's structuring element (default %(default)s)")
    _option(m, "refiner_depth", type=int, default=defaults_m.refiner_depth,
            help="SpeFR dilations, 0 = no SpeFR (ablation; default %(default)s)")
    _option(m, "refiner", choices=REFINERS, default=defaults_m.refiner,
            help="SpeFR form: SE-weighted blocks, or the grey-scale dilation of older models "
                 "(default %(default)s)")
    _option(m, "pooling", choices=POOLINGS, default=defaults_m.pooling,
            help="spectral-aware pooling, or the plain mean over the window (ablation; default %(default)s)")
    _option(m, "auxiliary", action="store_false",
            help="no centre-spectrum classifier loss: a plain CNN (baseline)")
    _option(m, "heads", choices=HEADS, default=defaults_m.heads,
            help="the map from the window classifier alone, from the mean of the window and centre-spectrum "
                 "classifiers' probabilities, or from the centre-spectrum classifier alone (default %(default)s)")
    _option(m, "tau", type=float, default=defaults_m.tau, help="distillation temperature (default %(default)s)")
    _option(m, "eps", type=float, default=defaults_m.eps, help="distillation weight 0..1 (default %(default)s)")


def _map_options(r: argparse.ArgumentParser) -> None:
    """The options of PredictConfig that shape the map and its side outputs (predict and map)."""
    defaults_p = PredictConfig()
    _option(r, "chunk", type=int, default=defaults_p.chunk,
            help="chunk side in pixels (default: from the memory a chunk needs); the map does not depend on it")
    _option(r, "precision", choices=PRECISIONS, default=defaults_p.precision,
            help="arithmetic on CUDA (default %(default)s)")
    _option(r, "cog", action="store_true", help="write a Cloud-Optimized GeoTIFF with overviews")
    _option(r, "probabilities", action="store_true", help="also write NAME_probabilities.tif")
    _option(r, "confidence", action="store_true", help="also write NAME_confidence.tif")
    _option(r, "quicklook", metavar="PNG", help="also write a coloured PNG of the map")
    _option(r, "tta", action="store_true",
            help="test-time augmentation: average each pixel's class probabilities over the 8 turns and "
                 "mirrorings of its window (8 times the compute)")


def _patch(text: str) -> int | str:
    """--patch: an integer, or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give an odd number of pixels (e.g. 11) or 'auto'") from None


def _option(group: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kwargs: Any) -> None:
    """Declare the option of config field ``name`` under its flag (:func:`cssd_geo.flags.flag`)."""
    group.add_argument(flag(name), dest=name, **kwargs)


def _pixel_options(parser: argparse.ArgumentParser) -> None:
    """The options that leave pixels out, shared by train and predict."""
    _option(parser, "mask", metavar="PATH",
            help="pixels to leave out: a raster (non-zero = leave out) or a vector layer of the "
                 "areas to keep")
    _option(parser, "product_masks", action="store_false",
            help="keep the pixels the product's quality layers (cloud, shadow, haze) flag")


def _config(kind: type[Config], args: argparse.Namespace) -> Config:
    """The config of class ``kind`` from the parsed options named after its fields."""
    given = dict(vars(args))
    if given.get("patch") == "auto":  # --patch auto: cross-validation chooses it, starting from the default
        given["patch"], given["auto_patch"] = ModelConfig().patch, True
    return from_options(kind, {name: given[name] for name in option_names(kind) if name in given})


def _run(args: argparse.Namespace, progress: TqdmProgress | JsonLinesProgress) -> None:
    if args.command == "train":
        from .training import train

        train(args.scene, args.labels, args.output, _config(TrainConfig, args), progress)
    elif args.command == "predict":
        from .prediction import predict

        predict(args.model, args.scene, args.output, _config(PredictConfig, args), progress)
    elif args.command == "map":
        from .workflow import map_scene

        map_config = _config(MapConfig, args)
        done = map_scene(args.scene, args.labels, args.output, map_config, progress)
        progress.close()
        kept = f"; model in {done.model_path}" if done.model_path else ""
        print(f"map written to {done.prediction.map_path}{kept}")
    elif args.command == "suggest":
        from .suggestion import suggest

        suggestions = suggest(args.model, args.scene, args.output, _config(SuggestConfig, args), progress)
        progress.close()
        print(suggestions.table())
    elif args.command == "sample":
        from .assessment import draw_sample

        sample = draw_sample(args.map, args.output, _config(SampleConfig, args), progress)
        progress.close()
        print(sample.table())
    elif args.command == "area":
        from .assessment import estimate_area

        area_config = _config(AreaConfig, args)
        estimate = estimate_area(args.map, args.labels, area_config, progress)
        progress.close()
        print(estimate.table())
        for path in (area_config.json_path, area_config.csv_path):
            if path:
                print(f"written to {path}")
    else:
        from .metrics import evaluate

        config = _config(EvaluateConfig, args)
        result = evaluate(args.map, args.labels, config, progress)
        progress.close()
        print(result.table())
        if config.exclude_training:
            print(f"\n{result.excluded_training_pixels} training pixels of {config.exclude_training} left out")
        if config.json_path:
            print(f"metrics written to {config.json_path}")
        if config.plot_path:
            print(f"confusion matrix written to {config.plot_path}")


# GDAL's block cache (5 % of RAM by default) would fill with scene blocks that the chunked
# engine reads once; a small cache keeps memory bounded by the chunk size. Set before the
# first raster is read; a user's own GDAL_CACHEMAX wins.
GDAL_CACHE_MB = "64"


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Each thread gets a glibc heap arena of its own; the large, varied tensors of the
    engine's threads then fragment them and memory creeps up with the scene size. A few
    arenas keep it bounded (measured: 2048 x 2048 x 200 scene, 2.19 -> 1.79 GiB peak RSS)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (a batch system or a container stopping the run)."""

    signum = 15


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated()


def _interruptible() -> None:
    """Let SIGINT stop a run (exit 130, partial output removed) even when the process was
    started with SIGINT ignored, as a shell does for jobs started with '&' in a script: QGIS's
    Cancel and `kill -INT` rely on it. SIGTERM stops a run the same way (exit 143)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cssd-geo``; returns the exit status."""
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
    _limit_malloc_arenas()
    _interruptible()
    args = _parser().parse_args(argv)
    progress = JsonLinesProgress() if args.json_progress else TqdmProgress(disable=True if args.quiet else None)
    try:
        _run(args, progress)
        return 0
    except CssdError as exc:
        progress.close()
        if args.debug:
            traceback.print_exc()
        print(f"cssd-geo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        progress.close()
        again = "; run the same command again to continue" if getattr(args, "resume", False) else ""
        print(f"cssd-geo: interrupted; nothing was written to the output path{again}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        progress.close()
        if args.debug:
            traceback.print_exc()
        detail = f": {first_line(exc)}" if str(exc).strip() else ""
        print(f"cssd-geo: internal error: {type(exc).__name__}{detail} (run with --debug for the traceback "
              "and report it)", file=sys.stderr)
        return 1
    finally:
        progress.close()


if __name__ == "__main__":
    sys.exit(main())
