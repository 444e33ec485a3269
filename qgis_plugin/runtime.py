"""The CSSD runtime that the plugin manages: a Python virtual environment in the QGIS profile
folder holding cssd-geo (the wheel that ships inside the plugin zip) and torch. The executable
backend runs its ``cssd-geo``, so a user never types a path or opens a terminal.

Everything goes through pip, which reads its own configuration (index, find-links, proxy,
certificates: pip.conf and the PIP_* variables), so a mirror or a proxy works as it does for
the user's other installs. Standard library and QGIS only.
"""
from __future__ import annotations

import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback

RUNTIME_FOLDER = "cssd-runtime"  # inside the QGIS profile folder
TORCH_DEFAULT = "torch==2.13.0"  # the torch the project tests (the Makefile's TORCH_SPEC; tests/qgis checks)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # CPU-only torch builds (PyPI's Linux wheels carry CUDA)
MIN_PYTHON = (3, 10)
# variables of QGIS's own Python and GDAL that must not leak into another Python
QGIS_ONLY_ENV = ("PYTHONPATH", "PYTHONHOME", "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA")
HINT = ("run 'Install or update CSSD runtime' (cssd:installruntime) in the Processing toolbox once: it installs "
        "cssd-geo and torch into the QGIS profile (or set a cssd-geo executable under Settings > Options > "
        "Processing > Providers > CSSD)")


def folder() -> Path:
    """Where the runtime lives: ``cssd-runtime`` in the QGIS profile folder."""
    return Path(QgsApplication.qgisSettingsDirPath()) / RUNTIME_FOLDER


def _bin(root: Path, name: str) -> Path:
    return root / "Scripts" / f"{name}.exe" if os.name == "nt" else root / "bin" / name


def installed_executable() -> str:
    """The runtime's cssd-geo executable, or "" when the runtime is not installed."""
    path = _bin(folder(), "cssd-geo")
    return str(path) if path.is_file() and os.access(path, os.X_OK) else ""


def plugin_wheel() -> Path:
    """The cssd-geo wheel shipped in the plugin zip (``wheels/``)."""
    found = sorted((Path(__file__).resolve().parent / "wheels").glob("cssd_geo-*.whl"))
    if not found:
        raise QgsProcessingException("the plugin has no cssd-geo wheel (wheels/cssd_geo-*.whl): install the plugin "
                                     "from the zip that 'make plugin' builds")
    return found[-1]


def clean_env() -> dict[str, str]:
    """The environment of this process without QGIS's own Python and GDAL settings."""
    return {k: v for k, v in os.environ.items() if k not in QGIS_ONLY_ENV}


def base_pythons() -> list[str]:
    """Pythons that could make the runtime, QGIS's own first: on Windows the OSGeo4W Python
    (``python.exe`` in QGIS's ``sys.prefix``), elsewhere ``bin/python3.X`` of its prefix, then
    ``python3`` and ``python`` on PATH."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.prefix)
    own = [prefix / "python.exe", prefix / "python3.exe"] if os.name == "nt" else \
        [prefix / "bin" / f"python{version}", prefix / "bin" / "python3"]
    found = [str(p) for p in own if p.is_file()] + [p for p in (shutil.which("python3"), shutil.which("python")) if p]
    return list(dict.fromkeys(found))


def find_python() -> str:
    """The first of :func:`base_pythons` that is Python >= 3.10 with ``venv`` and ``ensurepip``."""
    check = (f"import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= {MIN_PYTHON} else 1)")
    for python in base_pythons():
        try:
            if subprocess.run([python, "-c", check], env=clean_env(), capture_output=True, timeout=60).returncode == 0:
                return python
        except (OSError, subprocess.TimeoutExpired):
            continue
    raise QgsProcessingException(
        f"no Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} with the venv module was found (tried: "
        f"{', '.join(base_pythons()) or 'none'}); install one (Debian/Ubuntu: apt install python3-venv; Windows: "
        "the OSGeo4W installer's python3-pip) and run this again")


def nvidia_driver() -> bool:
    """Whether an NVIDIA driver is installed (its nvidia-smi, or the Linux kernel module)."""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def pip_has_a_source(python: str) -> bool:
    """Whether pip's own configuration (PIP_* variables or pip.conf) names an index or find-links."""
    if any(os.environ.get(k) for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS")):
        return True
    listed = subprocess.run([python, "-m", "pip", "config", "list"], env=clean_env(), capture_output=True, text=True)
    return any(key in listed.stdout for key in ("index-url", "find-links"))


def torch_arguments(requirement: str, python: str) -> list[str]:
    """Pip's arguments for torch: the user's ``requirement`` as given (e.g. ``torch==2.13.0
    --index-url https://download.pytorch.org/whl/cu126``); else TORCH_DEFAULT, with the CPU
    builds' index added when there is no NVIDIA driver and pip's configuration names no source
    of its own (so that a mirror's configuration decides, as for the user's other installs)."""
    if requirement.strip():
        return shlex.split(requirement)
    if nvidia_driver() or pip_has_a_source(python):
        return [TORCH_DEFAULT]
    return [TORCH_DEFAULT, "--extra-index-url", CPU_INDEX]


def run_step(argv: list[str], feedback: QgsProcessingFeedback) -> None:
    """Run one installation command, its output into the log; Cancel stops it."""
    feedback.pushCommandInfo(" ".join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail: list[str] = []
    while True:
        if feedback.isCanceled():
            proc.terminate()
            proc.wait()
            raise QgsProcessingException("cancelled; run the installation again to finish it")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        if line.strip():
            feedback.pushInfo(line.rstrip())
            tail = (tail + [line.strip()])[-3:]
    if proc.wait() != 0:
        raise QgsProcessingException(f"{Path(argv[0]).name} {' '.join(argv[1:4])} ... failed (exit status "
                                     f"{proc.returncode}): {' / '.join(tail)}")


def install(feedback: QgsProcessingFeedback, torch_requirement: str = "") -> str:
    """Create or update the runtime; returns its cssd-geo executable."""
    wheel = plugin_wheel()
    root = folder()
    python = str(_bin(root, "python"))
    # each step's command is made when its turn comes: torch's asks the new environment's pip
    steps: list[tuple[str, Callable[[], list[str]]]] = []
    if not Path(python).is_file():
        base = find_python()
        feedback.pushInfo(f"creating the CSSD runtime in {root} with {base}")
        steps.append(("creating the environment", lambda: [base, "-m", "venv", str(root)]))
    else:
        feedback.pushInfo(f"updating the CSSD runtime in {root}")
    pip = [python, "-m", "pip", "install", "--progress-bar", "off"]
    steps += [("installing torch", lambda: pip + torch_arguments(torch_requirement, python)),
              ("installing cssd-geo and its dependencies", lambda: pip + [str(wheel)]),
              ("installing this plugin's cssd-geo", lambda: pip + ["--force-reinstall", "--no-deps", str(wheel)])]
    for i, (name, command) in enumerate(steps):
        feedback.setProgressText(name)
        feedback.setProgress(100.0 * i / (len(steps) + 1))
        run_step(command(), feedback)
    executable = installed_executable()
    if not executable:
        raise QgsProcessingException(f"the runtime in {root} has no cssd-geo executable after the installation")
    run_step([executable, "--version"], feedback)
    run_step([python, "-c", "import torch; print('torch', torch.__version__, '- CUDA available:', "
                            "torch.cuda.is_available())"], feedback)
    feedback.setProgress(100.0)
    return executable
