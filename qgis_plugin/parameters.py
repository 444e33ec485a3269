"""The names of the Processing algorithms' parameters and outputs, as processing.run and
qgis_process take them: declared once here, used by the algorithms and the tests.
Standard library only."""
from __future__ import annotations

from typing import Any

# cssd:train, cssd:predict, cssd:evaluate
INPUT = "INPUT"  # the hyperspectral raster (train, predict) or the classification map (evaluate)
LABELS = "LABELS"  # labelled fields (train) or reference labels (evaluate)
CLASS_FIELD = "CLASS_FIELD"
SHOTS = "SHOTS"
EPOCHS = "EPOCHS"
PATCH = "PATCH"  # 0: chosen from the labels (--patch auto)
SEED = "SEED"
DEVICE = "DEVICE"
MODEL = "MODEL"  # the model file (predict; evaluate: leave out its training pixels)
CHUNK = "CHUNK"
PROBABILITIES = "PROBABILITIES"
OUTPUT = "OUTPUT"
# cssd:evaluate's numeric outputs (cssd:area gives OVERALL_ACCURACY too)
OVERALL_ACCURACY, AVERAGE_ACCURACY, KAPPA = "OVERALL_ACCURACY", "AVERAGE_ACCURACY", "KAPPA"
# cssd:sample (INPUT: the classification map, OUTPUT: the points) and cssd:area (INPUT: the map,
# LABELS: the labelled points, CLASS_FIELD, OUTPUT: the per-class table as CSV)
POINTS = "POINTS"
MIN_PER_CLASS = "MIN_PER_CLASS"
OUTPUT_JSON = "OUTPUT_JSON"
OUTPUT_MODEL = "OUTPUT_MODEL"  # cssd:map: where to keep the model (optional)
# cssd:installruntime
TORCH = "TORCH"  # the torch requirement (empty: automatic)
EXECUTABLE = "EXECUTABLE"  # output: the runtime's cssd-geo
# cssd:suggest (MODEL, INPUT: the raster, POINTS, DEVICE, OUTPUT: the points)
SPACING = "SPACING"  # 0: the model's window
MEASURE = "MEASURE"
MEASURES = ("margin", "entropy")  # cssd_geo.config.UNCERTAINTIES (tests/qgis checks)
OVERALL_ACCURACY_CI = "OVERALL_ACCURACY_CI95"

# The training options beyond the main parameters, offered as advanced parameters:
# (parameter, config field, kind, label, default). A kind is "text" or "file" (empty: the
# default), "bool", "int", "float", or a tuple of choices. The defaults and choices are
# cssd_geo's (TrainConfig, ModelConfig and their Literal types): the plugin cannot import
# cssd_geo into QGIS, so tests/qgis checks this table against them.
ADVANCED_TRAINING: tuple[tuple[str, str, Any, str, Any], ...] = (
    ("BANDS", "bands", "text", "Bands to use: numbers and ranges (1-50,60) or nm ranges (400-1300); "
     "empty: every band the file does not flag bad", None),
    ("EXCLUDE_BANDS", "exclude_bands", "text", "Bands to leave out, the same way", None),
    ("MASK", "mask", "file", "Mask: a raster (non-zero = leave out) or a vector layer of the areas to keep", None),
    ("PRODUCT_MASKS", "product_masks", "bool", "Leave out the pixels the product's quality layers flag", True),
    ("SAMPLING", "sampling", ("random", "grid"), "Labelled pixels: random, or window centres on a grid", "random"),
    ("GRID_STRIDE", "grid_stride", "int", "Grid stride (grid sampling)", 5),
    ("BATCH_SIZE", "batch_size", "int", "Batch size", 64),
    ("LEARNING_RATE", "learning_rate", "float", "Adam learning rate", 0.001),
    ("SCHEDULE", "schedule", ("cosine", "plateau"), "Learning rate: cosine decay, or halve when the loss stalls",
     "cosine"),
    ("UNLABELLED", "unlabelled", "int", "Unlabelled windows per step taught by the centre-spectrum classifier "
     "(0: labelled pixels only)", 32),
    ("TEACHER_THRESHOLD", "teacher_threshold", "float", "Confidence the centre-spectrum classifier needs to teach",
     0.8),
    ("SELF_TRAINING", "self_training", "bool", "The centre-spectrum classifier also learns its own confident labels",
     False),
    ("SE_SIZE", "se_size", "int", "Side of SpeFR's structuring element (odd)", 3),
    ("REFINER_DEPTH", "refiner_depth", "int", "SpeFR depth (0: no SpeFR)", 2),
    ("REFINER", "refiner", ("weighted", "dilation"), "SpeFR form", "weighted"),
    ("POOLING", "pooling", ("sap", "mean"), "Pooling: spectral-aware, or the plain mean", "sap"),
    ("AUXILIARY", "auxiliary", "bool", "Centre-spectrum classifier (off: a plain CNN)", True),
    ("HEADS", "heads", ("window", "both", "spectral"), "Map from the window classifier, from both classifiers, "
     "or from the centre-spectrum classifier (a patch of 0 chooses this too)", "window"),
    ("TAU", "tau", "float", "Distillation temperature", 2.0),
    ("EPS", "eps", "float", "Distillation weight (0-1)", 0.5),
)


def advanced(field: str) -> str:
    """The advanced parameter of training option ``field``."""
    return next(name for name, option, *_ in ADVANCED_TRAINING if option == field)
