"""What the workers of a Dask cluster get from a prediction run besides its tasks: the model
file, as a worker plugin (imported only for a cluster run: it needs the ``[cluster]`` extra)."""
from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

from .blocks import register_model_file


class ModelFile(WorkerPlugin):
    """Hands the model file's bytes to every worker once, workers that join or restart during
    the run included (a lost worker's replacement); the chunk tasks name it by its sha256."""

    def __init__(self, digest: str, data: bytes) -> None:
        self.digest, self.data = digest, data
        self.name = f"cssd-model-{digest}"

    def setup(self, worker: Any) -> None:
        """Called by each worker as it starts, or at once on a running one."""
        register_model_file(self.digest, self.data)
