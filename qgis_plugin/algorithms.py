"""The Processing algorithms. Each maps its parameters to the options of one cssd-geo
step (the fields of cssd_geo's config dataclasses) and hands them to :mod:`.backend`."""
from __future__ import annotations

import json
import os
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsRasterLayer,
)

from . import backend, runtime
from . import parameters as params

VECTOR_FORMATS = ["shp", "gpkg", "geojson"]  # what cssd-geo reads directly; other layers are exported


def advanced_parameter(name: str, kind: Any, label: str, default: Any) -> QgsProcessingParameterDefinition:
    """The QGIS parameter of one ADVANCED_TRAINING row, flagged advanced."""
    if isinstance(kind, tuple):
        param: QgsProcessingParameterDefinition = QgsProcessingParameterEnum(
            name, label, options=list(kind), defaultValue=kind.index(default))
    elif kind == "bool":
        param = QgsProcessingParameterBoolean(name, label, defaultValue=default)
    elif kind in ("int", "float"):
        number = QgsProcessingParameterNumber.Integer if kind == "int" else QgsProcessingParameterNumber.Double
        param = QgsProcessingParameterNumber(name, label, type=number, defaultValue=default)
    elif kind == "file":
        param = QgsProcessingParameterFile(name, label, optional=True)
    else:
        param = QgsProcessingParameterString(name, label, optional=True)
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


def advanced_options(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any],
                     context: QgsProcessingContext) -> dict[str, Any]:
    """The config options of the ADVANCED_TRAINING parameters (parameters.py) given; an empty text or
    file gives the default."""
    options: dict[str, Any] = {}
    for name, field, kind, _, _ in params.ADVANCED_TRAINING:
        if isinstance(kind, tuple):
            options[field] = kind[algorithm.parameterAsEnum(parameters, name, context)]
        elif kind == "bool":
            options[field] = algorithm.parameterAsBool(parameters, name, context)
        elif kind == "int":
            options[field] = algorithm.parameterAsInt(parameters, name, context)
        elif kind == "float":
            options[field] = algorithm.parameterAsDouble(parameters, name, context)
        else:
            text = (algorithm.parameterAsFile(parameters, name, context) if kind == "file"
                    else algorithm.parameterAsString(parameters, name, context))
            options[field] = text or None
    return options


def raster_path(layer: QgsRasterLayer | None, what: str) -> str:
    """The file behind a raster layer; a layer with none (WMS, memory, virtual) is refused."""
    if layer is None:
        raise QgsProcessingException(f"{what}: no raster layer given")
    path = layer.source().split("|")[0]
    if layer.providerType() != "gdal" or not os.path.exists(path):
        raise QgsProcessingException(
            f"{what}: layer {layer.name()!r} is not a raster file ({layer.providerType()} source); "
            "save it as a GeoTIFF (right-click > Export > Save As) and use that layer")
    return path


class _Algorithm(QgsProcessingAlgorithm):
    """Runs in Processing's background thread (no FlagNoThreading): the QGIS window stays
    responsive; progress and messages reach the dialog through the feedback, and Cancel is
    read from it between chunks and epochs."""

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802 (QGIS API)
        return type(self)()


class TrainAlgorithm(_Algorithm):
    """cssd:train — a CSSD model from a hyperspectral raster and labelled polygons or points."""

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802
        return "Train CSSD model"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Trains a CSSD classifier on the hyperspectral raster from a few labelled pixels per class, "
                "drawn inside the polygons (or at the points) of the label layer. The class field may hold "
                "integers or names; left empty, it is guessed. Writes a .cssd model file.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.add_training_parameters()
        self.addParameter(QgsProcessingParameterFileDestination(params.OUTPUT, "Model file",
                                                                fileFilter="CSSD model (*.cssd)"))
        for name, _, kind, label, default in params.ADVANCED_TRAINING:
            self.addParameter(advanced_parameter(name, kind, label, default))

    def add_training_parameters(self) -> None:
        """The main training parameters (the advanced ones follow the outputs)."""
        self.addParameter(QgsProcessingParameterRasterLayer(params.INPUT, "Hyperspectral raster"))
        self.addParameter(QgsProcessingParameterVectorLayer(
            params.LABELS, "Labelled fields", [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(params.CLASS_FIELD, "Class field",
                                                      parentLayerParameterName=params.LABELS,
                                                      optional=True))
        self.addParameter(QgsProcessingParameterNumber(params.SHOTS, "Labelled pixels per class", defaultValue=16,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber(params.EPOCHS, "Epochs (0: 50, more when there are few samples)",
                                                       defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            params.PATCH, "Pooled window side (odd; 0: chosen by leave-fields-out cross-validation on the labels, "
            "which also estimates the accuracy on unlabelled fields)", defaultValue=11, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(params.SEED, "Random seed", defaultValue=0))
        self.addParameter(QgsProcessingParameterString(params.DEVICE, "Device (auto, cpu, cuda, cuda:N)",
                                                       defaultValue="auto"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        inputs = self.training_inputs(parameters, context, feedback)
        output = self.parameterAsFileOutput(parameters, params.OUTPUT, context)
        backend.run("train", {**inputs, "output": output}, self.training_options(parameters, context), feedback)
        return {params.OUTPUT: output}

    def training_inputs(self, parameters: dict[str, Any], context: QgsProcessingContext,
                        feedback: QgsProcessingFeedback) -> dict[str, str]:
        """The scene and the labels, as files."""
        scene = raster_path(self.parameterAsRasterLayer(parameters, params.INPUT, context), "Hyperspectral raster")
        labels = self.parameterAsCompatibleSourceLayerPath(parameters, params.LABELS, context, VECTOR_FORMATS,
                                                           "gpkg", feedback)
        return {"scene": scene, "labels": labels}

    def training_options(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        """The training options of the parameters (TrainConfig's fields)."""
        options = {"class_field": self.parameterAsString(parameters, params.CLASS_FIELD, context) or None,
                   "shots": self.parameterAsInt(parameters, params.SHOTS, context),
                   "epochs": self.parameterAsInt(parameters, params.EPOCHS, context) or None,
                   "seed": self.parameterAsInt(parameters, params.SEED, context),
                   "device": self.parameterAsString(parameters, params.DEVICE, context) or "auto",
                   "overwrite": True,  # QGIS's file dialog has already asked
                   **advanced_options(self, parameters, context)}
        patch = self.parameterAsInt(parameters, params.PATCH, context)
        options.update({"auto_patch": True} if patch == 0 else {"patch": patch})
        return options


class _LoadStyle(QgsProcessingLayerPostProcessorInterface):
    """Gives the map loaded into the project its class colours and names (the .qml that
    cssd-geo writes beside it)."""

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> None:
        qml = os.path.splitext(layer.source())[0] + ".qml"
        if os.path.exists(qml):
            layer.loadNamedStyle(qml)
            layer.triggerRepaint()


_LOAD_STYLE = _LoadStyle()  # QGIS keeps no reference of its own: it must outlive the algorithm


class PredictAlgorithm(_Algorithm):
    """cssd:predict — the class map of a whole raster, styled with the model's classes."""

    def name(self) -> str:
        return "predict"

    def displayName(self) -> str:  # noqa: N802
        return "Predict classification map"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Predicts the class of every pixel of the raster with a CSSD model, chunk by chunk (the map "
                "does not depend on the chunk size), and writes a tiled GeoTIFF with the class colours and "
                "names. Optionally writes per-class probabilities beside it (NAME_probabilities.tif).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(params.MODEL, "Model file", extension="cssd"))
        self.addParameter(QgsProcessingParameterRasterLayer(params.INPUT, "Hyperspectral raster"))
        self.addParameter(QgsProcessingParameterNumber(params.CHUNK, "Chunk side in pixels (0: from memory)",
                                                       defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterString(params.DEVICE, "Device (auto, cpu, cuda, cuda:N)",
                                                       defaultValue="auto"))
        self.addParameter(QgsProcessingParameterBoolean(params.PROBABILITIES, "Also write class probabilities",
                                                        defaultValue=False, optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(params.OUTPUT, "Classification map"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        model = self.parameterAsFile(parameters, params.MODEL, context)
        scene = raster_path(self.parameterAsRasterLayer(parameters, params.INPUT, context), "Hyperspectral raster")
        output = self.parameterAsOutputLayer(parameters, params.OUTPUT, context)
        if os.path.splitext(output)[1].lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"{output}: the classification map is written as GeoTIFF; "
                                         "give a name ending in .tif")
        options = {"chunk": self.parameterAsInt(parameters, params.CHUNK, context) or None,
                   "device": self.parameterAsString(parameters, params.DEVICE, context) or "auto",
                   "probabilities": self.parameterAsBool(parameters, params.PROBABILITIES, context),
                   "overwrite": True}
        backend.run("predict", {"model": model, "scene": scene, "output": output}, options, feedback)
        if context.willLoadLayerOnCompletion(output):
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(_LOAD_STYLE)
        return {params.OUTPUT: output}


class EvaluateAlgorithm(_Algorithm):
    """cssd:evaluate — overall / average accuracy, kappa and confusion of a map."""

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate map"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Compares a classification map with reference labels (polygons or points): overall and "
                "average accuracy, kappa, per-class accuracy and the confusion matrix, in the log and as "
                "a JSON file. Give the model file to leave out the pixels it was trained on.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(params.INPUT, "Classification map"))
        self.addParameter(QgsProcessingParameterVectorLayer(
            params.LABELS, "Reference labels", [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(params.CLASS_FIELD, "Class field",
                                                      parentLayerParameterName=params.LABELS,
                                                      optional=True))
        self.addParameter(QgsProcessingParameterFile(
            params.MODEL, "Model file whose training pixels are left out (recommended: otherwise the accuracy "
            "counts the pixels the model learnt)", extension="cssd", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(params.OUTPUT, "Metrics (JSON)",
                                                                fileFilter="JSON (*.json)"))
        for name, title in ((params.OVERALL_ACCURACY, "Overall accuracy"),
                            (params.AVERAGE_ACCURACY, "Average accuracy"),
                            (params.KAPPA, "Kappa")):
            self.addOutput(QgsProcessingOutputNumber(name, title))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        path = raster_path(self.parameterAsRasterLayer(parameters, params.INPUT, context), "Classification map")
        labels = self.parameterAsCompatibleSourceLayerPath(parameters, params.LABELS, context, VECTOR_FORMATS,
                                                           "gpkg", feedback)
        output = self.parameterAsFileOutput(parameters, params.OUTPUT, context)
        options = {"class_field": self.parameterAsString(parameters, params.CLASS_FIELD, context) or None,
                   "exclude_training": self.parameterAsFile(parameters, params.MODEL, context) or None,
                   "json_path": output}
        table = backend.run("evaluate", {"map": path, "labels": labels}, options, feedback)
        for line in table.splitlines():
            feedback.pushInfo(line)
        with open(output, encoding="utf-8") as f:
            metrics = json.load(f)
        return {params.OUTPUT: output, params.OVERALL_ACCURACY: metrics["overall_accuracy"],
                params.AVERAGE_ACCURACY: metrics["average_accuracy"], params.KAPPA: metrics["kappa"]}


class SampleAlgorithm(_Algorithm):
    """cssd:sample — a stratified random sample of points from a classification map, to label."""

    def name(self) -> str:
        return "sample"

    def displayName(self) -> str:  # noqa: N802
        return "Draw reference sample"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Draws a stratified random sample of pixels from a classification map (the strata are its "
                "classes): at least the minimum per class, the rest in proportion to the mapped area. Writes "
                "points with the mapped class and an empty 'reference' field: fill it with each point's true "
                "class id (from imagery or the field), then run 'Area and accuracy'.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(params.INPUT, "Classification map"))
        self.addParameter(QgsProcessingParameterNumber(params.POINTS, "Points in all", defaultValue=500,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber(params.MIN_PER_CLASS, "At least this many per class",
                                                       defaultValue=50, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(params.SEED, "Random seed", defaultValue=0))
        self.addParameter(QgsProcessingParameterVectorDestination(params.OUTPUT, "Reference sample",
                                                                  type=QgsProcessing.TypeVectorPoint))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        path = raster_path(self.parameterAsRasterLayer(parameters, params.INPUT, context), "Classification map")
        output = self.parameterAsOutputLayer(parameters, params.OUTPUT, context)
        options = {"points": self.parameterAsInt(parameters, params.POINTS, context),
                   "min_per_class": self.parameterAsInt(parameters, params.MIN_PER_CLASS, context),
                   "seed": self.parameterAsInt(parameters, params.SEED, context), "overwrite": True}
        for line in backend.run("sample", {"map": path, "output": output}, options, feedback).splitlines():
            feedback.pushInfo(line)
        return {params.OUTPUT: output}


class AreaAlgorithm(_Algorithm):
    """cssd:area — error-adjusted area and accuracy with 95 % intervals from labelled sample points."""

    def name(self) -> str:
        return "area"

    def displayName(self) -> str:  # noqa: N802
        return "Area and accuracy"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Estimates each class's area corrected for the map's errors, and user's, producer's and "
                "overall accuracy, each with a 95 % confidence interval, from reference points labelled with "
                "their true class (a stratified random sample of the map, e.g. from 'Draw reference sample'). "
                "Uses the stratified estimators of good-practice accuracy assessment (Olofsson et al. 2014). "
                "Writes a table (CSV) and JSON; the figures also appear in the log.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(params.INPUT, "Classification map"))
        self.addParameter(QgsProcessingParameterVectorLayer(params.LABELS, "Labelled reference points",
                                                            [QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(params.CLASS_FIELD, "Field with the true class",
                                                      defaultValue="reference",
                                                      parentLayerParameterName=params.LABELS))
        self.addParameter(QgsProcessingParameterFileDestination(params.OUTPUT, "Area and accuracy table",
                                                                fileFilter="CSV (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination(params.OUTPUT_JSON, "Estimates (JSON)",
                                                                fileFilter="JSON (*.json)", optional=True,
                                                                createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(params.OVERALL_ACCURACY, "Overall accuracy"))
        self.addOutput(QgsProcessingOutputNumber(params.OVERALL_ACCURACY_CI, "Overall accuracy, 95 % half-interval"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        path = raster_path(self.parameterAsRasterLayer(parameters, params.INPUT, context), "Classification map")
        labels = self.parameterAsCompatibleSourceLayerPath(parameters, params.LABELS, context, VECTOR_FORMATS,
                                                           "gpkg", feedback)
        table = self.parameterAsFileOutput(parameters, params.OUTPUT, context)
        # the JSON is read back for the numeric outputs: a scratch file beside the table when not asked for
        wanted = self.parameterAsFileOutput(parameters, params.OUTPUT_JSON, context)
        estimates = wanted or os.path.splitext(table)[0] + ".json"
        options = {"class_field": self.parameterAsString(parameters, params.CLASS_FIELD, context) or "reference",
                   "json_path": estimates, "csv_path": table}
        for line in backend.run("area", {"map": path, "labels": labels}, options, feedback).splitlines():
            feedback.pushInfo(line)
        with open(estimates, encoding="utf-8") as f:
            result = json.load(f)
        if not wanted:
            os.unlink(estimates)
        context.addLayerToLoadOnCompletion(table, QgsProcessingContext.LayerDetails(
            "Area and accuracy", context.project(), params.OUTPUT))
        outputs = {params.OUTPUT: table, params.OVERALL_ACCURACY: result["overall_accuracy"],
                   params.OVERALL_ACCURACY_CI: result["overall_accuracy_ci95"]}
        return {**outputs, params.OUTPUT_JSON: wanted} if wanted else outputs


class MapAlgorithm(TrainAlgorithm):
    """cssd:map — train and predict in one step: the styled class map from a raster and labels."""

    def name(self) -> str:
        return "map"

    def displayName(self) -> str:  # noqa: N802
        return "Map land cover (train and predict)"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Trains a CSSD classifier from a few labelled pixels per class of the label layer (as 'Train "
                "CSSD model') and writes the class map of the whole raster (as 'Predict classification map'), "
                "styled with the class colours and names. Keeps the model file when one is given.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.add_training_parameters()
        self.addParameter(QgsProcessingParameterBoolean(params.PROBABILITIES, "Also write class probabilities",
                                                        defaultValue=False, optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(params.OUTPUT, "Classification map"))
        self.addParameter(QgsProcessingParameterFileDestination(params.OUTPUT_MODEL, "Model file (optional)",
                                                                fileFilter="CSSD model (*.cssd)", optional=True,
                                                                createByDefault=False))
        for name, _, kind, label, default in params.ADVANCED_TRAINING:
            self.addParameter(advanced_parameter(name, kind, label, default))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        inputs = self.training_inputs(parameters, context, feedback)
        output = self.parameterAsOutputLayer(parameters, params.OUTPUT, context)
        if os.path.splitext(output)[1].lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"{output}: the classification map is written as GeoTIFF; "
                                         "give a name ending in .tif")
        model = self.parameterAsFileOutput(parameters, params.OUTPUT_MODEL, context)
        options = {**self.training_options(parameters, context), "model_output": model or None,
                   "probabilities": self.parameterAsBool(parameters, params.PROBABILITIES, context)}
        backend.run("map", {**inputs, "output": output}, options, feedback)
        if context.willLoadLayerOnCompletion(output):
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(_LOAD_STYLE)
        return {params.OUTPUT: output, params.OUTPUT_MODEL: model} if model else {params.OUTPUT: output}


class SuggestAlgorithm(_Algorithm):
    """cssd:suggest — where to label next: the pixels where the model is least certain."""

    def name(self) -> str:
        return "suggest"

    def displayName(self) -> str:  # noqa: N802
        return "Suggest where to label next"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Finds the pixels where the model is least certain (the two likeliest classes closest, or the "
                "highest entropy), at least a window apart and spread over the scene and the predicted classes. "
                "Writes them as points ranked by uncertainty, with the predicted class, its confidence and an "
                "empty 'label' field: label them, add them to the training labels and train again.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(params.MODEL, "Model file", extension="cssd"))
        self.addParameter(QgsProcessingParameterRasterLayer(params.INPUT, "Hyperspectral raster"))
        self.addParameter(QgsProcessingParameterNumber(params.POINTS, "Points", defaultValue=20, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(params.SPACING, "Least distance between points in pixels "
                                                       "(0: the model's window)", defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterEnum(params.MEASURE, "Uncertainty", options=list(params.MEASURES),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterString(params.DEVICE, "Device (auto, cpu, cuda, cuda:N)",
                                                       defaultValue="auto"))
        self.addParameter(QgsProcessingParameterVectorDestination(params.OUTPUT, "Points to label",
                                                                  type=QgsProcessing.TypeVectorPoint))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        model = self.parameterAsFile(parameters, params.MODEL, context)
        scene = raster_path(self.parameterAsRasterLayer(parameters, params.INPUT, context), "Hyperspectral raster")
        output = self.parameterAsOutputLayer(parameters, params.OUTPUT, context)
        options = {"points": self.parameterAsInt(parameters, params.POINTS, context),
                   "spacing": self.parameterAsInt(parameters, params.SPACING, context) or None,
                   "measure": params.MEASURES[self.parameterAsEnum(parameters, params.MEASURE, context)],
                   "device": self.parameterAsString(parameters, params.DEVICE, context) or "auto", "overwrite": True}
        for line in backend.run("suggest", {"model": model, "scene": scene, "output": output}, options,
                                feedback).splitlines():
            feedback.pushInfo(line)
        return {params.OUTPUT: output}


class InstallRuntimeAlgorithm(_Algorithm):
    """cssd:installruntime — the CSSD runtime in the QGIS profile (see runtime.py)."""

    def name(self) -> str:
        return "installruntime"

    def displayName(self) -> str:  # noqa: N802
        return "Install or update CSSD runtime"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Installs what the CSSD algorithms run on, once: a Python environment in the QGIS profile folder "
                "with cssd-geo (shipped with this plugin) and torch, downloaded by pip from the package index "
                "(pip's own settings, such as a mirror or a proxy, apply). Torch is the CPU build, or the CUDA "
                "build when an NVIDIA driver is found; the Torch requirement overrides that (for example "
                "'torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126'). Run it again after "
                "updating the plugin. Needs a few GB of disk and a few minutes.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterString(params.TORCH, "Torch requirement (empty: automatic)",
                                                       defaultValue="", optional=True))
        self.addOutput(QgsProcessingOutputString(params.EXECUTABLE, "cssd-geo executable"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        executable = runtime.install(feedback, self.parameterAsString(parameters, params.TORCH, context) or "")
        feedback.pushInfo(f"the CSSD algorithms now run {executable}")
        return {params.EXECUTABLE: executable}
