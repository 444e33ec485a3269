"""Where the work runs: the cssd_geo library inside QGIS's Python, or the ``cssd-geo``
executable of another Python environment, whose JSON-lines progress is streamed into the
Processing feedback. Both take the same options: the field names of cssd_geo's config
dataclasses (TrainConfig, PredictConfig, MapConfig, ...), so nothing here knows the model.

This module imports only the standard library and QGIS: importing pyproj, geopandas or
pyogrio wheels into a QGIS process crashes it at exit, so cssd_geo is imported only when the
in-QGIS backend is chosen.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from . import runtime

if TYPE_CHECKING:
    from cssd_geo import Progress

BACKEND_SETTING = "CSSD_BACKEND"
EXECUTABLE_SETTING = "CSSD_EXECUTABLE"
BACKENDS = ("auto", "in QGIS", "executable")
# the same choices from the environment (batch scripts, tests): CSSD_GEO_BACKEND=auto|inprocess|executable
ENV_BACKEND, ENV_EXECUTABLE = "CSSD_GEO_BACKEND", "CSSD_GEO_EXECUTABLE"
def _setting(name: str) -> str:
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:
        return ""
    value = ProcessingConfig.getSetting(name)
    return str(value).strip() if value else ""


def library_importable() -> bool:
    """True when cssd-geo and every package it requires are installed for QGIS's Python
    (checked from their metadata, without importing them; a cssd_geo folder that merely
    lies on sys.path does not count)."""
    try:
        dist = importlib.metadata.distribution("cssd-geo")
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                importlib.metadata.distribution(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("cssd_geo") is not None


def executable() -> str:
    """The cssd-geo executable to run: the one set (environment or settings), else the CSSD
    runtime's (cssd:installruntime), else one on PATH, else ""."""
    path = os.environ.get(ENV_EXECUTABLE) or _setting(EXECUTABLE_SETTING)
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise QgsProcessingException(f"cssd-geo executable {path!r} does not exist or cannot be run; "
                                         f"fix the path, or {runtime.HINT}")
        return path
    return runtime.installed_executable() or shutil.which("cssd-geo") or ""


def choose() -> str:
    """``"inprocess"`` or ``"executable"``, from the settings and what is installed. Running
    inside QGIS's Python is opt-in ("in QGIS"): ``auto`` means the executable."""
    wanted = (os.environ.get(ENV_BACKEND) or _setting(BACKEND_SETTING) or "auto").lower().replace(" ", "")
    if wanted in ("inqgis", "inprocess"):
        if not library_importable():
            raise QgsProcessingException(f"QGIS's Python ({sys.executable}) cannot import cssd_geo; install it there, "
                                         f"or use the runtime: {runtime.HINT}, and set the backend to auto")
        return "inprocess"
    if executable():
        return "executable"
    raise QgsProcessingException(f"cssd-geo is not installed for QGIS yet: {runtime.HINT}")


def run(command: str, inputs: dict[str, str], options: dict[str, Any], feedback: QgsProcessingFeedback) -> str:
    """Run ``command`` (train, predict, map, suggest, evaluate, sample or area) and return what it
    prints as its result (the tables of suggest, evaluate, sample and area). ``inputs`` are the
    paths the step reads and writes, ``options`` the fields of its config dataclass."""
    if choose() == "inprocess":
        return _run_in_process(command, inputs, options, feedback)
    return _run_executable(command, inputs, options, feedback)


# --- inside QGIS's Python ----------------------------------------------------------------------

_GEOMETRY_CHECKED: list[bool] = []  # the self-check passed in this QGIS process


def geometry_self_check() -> None:
    """Before cssd_geo runs inside QGIS: read a known polygon (lon/lat), reproject it to UTM
    and rasterise it on 30 m pixels with cssd_geo's own readers. The GEOS/GDAL/PROJ libraries
    of the shapely, pyogrio and pyproj wheels can clash with QGIS's own in one process, and
    then every label arrives empty; refuse with the runtime's hint instead."""
    if _GEOMETRY_CHECKED:
        return
    import tempfile

    clashing = _own_geometry_libraries() if _qgis_program() else []
    if clashing:  # importing them would already doom the process: refuse before that
        raise QgsProcessingException(
            f"cssd-geo inside QGIS's Python failed its geometry self-check ({' and '.join(clashing)} bring their own "
            f"PROJ/GDAL libraries, which clash with QGIS's own in one process: labels come out empty and QGIS "
            f"crashes when it exits). Use the runtime: {runtime.HINT}, and set the backend to auto")
    try:
        from rasterio.crs import CRS
        from rasterio.transform import from_origin

        from cssd_geo.io.scene import Grid
        from cssd_geo.io.vector import rasterize_labels, read_labels

        square = [[13.40, 52.50], [13.41, 52.50], [13.41, 52.51], [13.40, 52.51], [13.40, 52.50]]
        with tempfile.TemporaryDirectory(prefix="cssd-self-check-") as tmp:
            path = os.path.join(tmp, "square.geojson")
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"type": "FeatureCollection", "features": [{
                    "type": "Feature", "properties": {"class_id": 1},
                    "geometry": {"type": "Polygon", "coordinates": [square]}}]}, f)
            labels = read_labels(path, CRS.from_epsg(32633), "class_id")
            grid = Grid(CRS.from_epsg(32633), from_origin(380000.0, 5830000.0, 30.0, 30.0), 1000, 1000)
            pixels = len(rasterize_labels(labels, grid))
        detail = f"a 677 m x 1113 m square covered {pixels} pixels of 30 m instead of about 837"
        ok = 700 < pixels < 1000
    except Exception as exc:  # any failure of the libraries is the finding
        detail, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", False
    if not ok:
        raise QgsProcessingException(
            f"cssd-geo inside QGIS's Python failed its geometry self-check ({detail}): the geometry libraries "
            f"of its Python packages clash with QGIS's own here, and labels would be lost. Use the runtime: "
            f"{runtime.HINT}, and set the backend to auto")
    _GEOMETRY_CHECKED.append(True)


def _own_geometry_libraries() -> list[str]:
    """The packages among pyproj and pyogrio whose wheels carry their own PROJ/GDAL (a
    ``<name>.libs`` folder beside the package, or ``.dylibs`` inside it), found without
    importing them. Imported into a QGIS program, each of them crashed it at exit (measured
    with Debian's QGIS 3.22: qgis_process ended in SIGABRT or SIGSEGV)."""
    found = []
    for name in ("pyproj", "pyogrio"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        package = Path(spec.origin).parent
        if (package.parent / f"{name}.libs").is_dir() or (package / ".dylibs").is_dir():
            found.append(name)
    return found


def _qgis_program() -> bool:
    """Whether this Python runs inside a QGIS program (qgis, qgis_process) rather than a Python
    interpreter that imported QGIS (where the libraries load in another order, as under pytest)."""
    exe = os.path.realpath("/proc/self/exe") if os.path.exists("/proc/self/exe") else sys.executable
    return not Path(exe).name.lower().startswith("python")


def _run_in_process(command: str, inputs: dict[str, str], options: dict[str, Any],
                    feedback: QgsProcessingFeedback) -> str:
    geometry_self_check()
    import cssd_geo
    from cssd_geo.config import from_options

    progress = _feedback_progress(feedback)
    try:
        if command == "train":
            cssd_geo.train(inputs["scene"], inputs["labels"], inputs["output"],
                           from_options(cssd_geo.TrainConfig, options), progress)
        elif command == "predict":
            cssd_geo.predict(inputs["model"], inputs["scene"], inputs["output"],
                             from_options(cssd_geo.PredictConfig, options), progress)
        elif command == "map":
            cssd_geo.map_scene(inputs["scene"], inputs["labels"], inputs["output"],
                               from_options(cssd_geo.MapConfig, options), progress)
        elif command == "suggest":
            return cssd_geo.suggest(inputs["model"], inputs["scene"], inputs["output"],
                                    from_options(cssd_geo.SuggestConfig, options), progress).table()
        elif command == "sample":
            return cssd_geo.draw_sample(inputs["map"], inputs["output"], from_options(cssd_geo.SampleConfig, options),
                                        progress).table()
        elif command == "area":
            return cssd_geo.estimate_area(inputs["map"], inputs["labels"], from_options(cssd_geo.AreaConfig, options),
                                          progress).table()
        else:
            return cssd_geo.evaluate(inputs["map"], inputs["labels"], from_options(cssd_geo.EvaluateConfig, options),
                                     progress).table()
    except cssd_geo.Cancelled as exc:
        raise QgsProcessingException("cancelled; nothing was written to the output") from exc
    except cssd_geo.CssdError as exc:
        raise QgsProcessingException(str(exc)) from exc
    return ""


def _feedback_progress(feedback: QgsProcessingFeedback) -> Progress:
    """A cssd_geo Progress that reports to a QgsProcessingFeedback."""
    from cssd_geo import Progress

    class FeedbackProgress(Progress):
        def __init__(self) -> None:
            self.total, self.done = 0, 0

        def stage(self, name: str, total: int) -> None:
            self.total, self.done = max(1, total), 0
            feedback.setProgressText(name)
            feedback.setProgress(0)

        def advance(self, steps: int = 1, note: str = "") -> None:
            self.done += steps
            feedback.setProgress(min(100.0, 100.0 * self.done / self.total))

        def message(self, text: str) -> None:
            feedback.pushInfo(text)

        def cancelled(self) -> bool:
            return feedback.isCanceled()

    return FeedbackProgress()


# --- through the cssd-geo executable -----------------------------------------------------------

def _flags() -> ModuleType:
    """cssd_geo's table of command-line flags (cssd_geo/flags.py, standard library only): the
    copy in the plugin zip, or in a source checkout the package's own file, loaded by path so
    that the cssd_geo package (torch, the GDAL wheels) is not imported into QGIS."""
    try:
        from . import flags  # type: ignore[attr-defined]  # written into the zip by tools/build_qgis_plugin.py
    except ImportError:
        path = Path(__file__).resolve().parents[1] / "cssd_geo" / "flags.py"
        spec = importlib.util.spec_from_file_location("cssd_geo_flags", path)
        if spec is None or spec.loader is None:
            raise QgsProcessingException(f"the plugin is incomplete: {path} is missing; reinstall it") from None
        flags = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(flags)
    return flags


def command_line(command: str, inputs: dict[str, str], options: dict[str, Any]) -> list[str]:
    """The cssd-geo arguments for a step (after the executable): its inputs, then its options
    under the CLI's flags (:func:`cssd_geo.flags.arguments`)."""
    if command in ("train", "map"):
        args = [inputs["scene"], "--labels", inputs["labels"], "-o", inputs["output"]]
    elif command in ("predict", "suggest"):
        args = [inputs["model"], inputs["scene"], "-o", inputs["output"]]
    elif command == "sample":
        args = [inputs["map"], "-o", inputs["output"]]
    else:  # evaluate, area
        args = [inputs["map"], "--labels", inputs["labels"]]
    return ["--json-progress", command] + args + list(_flags().arguments(options))


def _run_executable(command: str, inputs: dict[str, str], options: dict[str, Any],
                    feedback: QgsProcessingFeedback) -> str:
    argv = [executable()] + command_line(command, inputs, options)
    feedback.pushCommandInfo(" ".join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=runtime.clean_env())
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    readers = [threading.Thread(target=_pump, args=(proc.stderr, lines.put), daemon=True),
               threading.Thread(target=_pump, args=(proc.stdout, out.append), daemon=True)]
    for reader in readers:
        reader.start()
    total, done, cancelled = 1, 0, False
    errors: list[str] = []
    while True:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            line = None
        if feedback.isCanceled() and not cancelled:
            cancelled = True
            _stop(proc)
        if line is None:
            if proc.poll() is not None and not readers[0].is_alive() and lines.empty():
                break
            continue
        event = _event(line)
        if event is None:
            if line.strip():
                errors.append(line.strip())
                feedback.pushInfo(line.rstrip())
        elif "stage" in event:
            total, done = max(1, int(event["total"])), 0
            feedback.setProgressText(str(event["stage"]))
            feedback.setProgress(0)
        elif "advance" in event:
            done += int(event["advance"])
            feedback.setProgress(min(100.0, 100.0 * done / total))
        elif "message" in event:
            feedback.pushInfo(str(event["message"]))
    proc.wait()
    readers[1].join()
    if cancelled:
        raise QgsProcessingException("cancelled; nothing was written to the output")
    if proc.returncode != 0:
        reason = errors[-1] if errors else f"exit status {proc.returncode}"
        raise QgsProcessingException(reason.replace("cssd-geo: error: ", ""))
    return "".join(out)


def _pump(stream: IO[str], put: Callable[[str], object]) -> None:
    for line in iter(stream.readline, ""):
        put(line)
    stream.close()


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Ask cssd-geo to stop (it deletes its partial output and exits), then insist."""
    if proc.poll() is not None:
        return
    if os.name == "posix":
        proc.send_signal(signal.SIGINT)
    else:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
