"""Resumable predictions (``predict --resume``): each finished chunk of every output layer is
saved at once, atomically, as its own ``.npy`` file in a hidden folder beside the output
(``.NAME.resume/``), with a record of the request. A run that is interrupted (Ctrl-C,
SIGTERM, SIGKILL, a crash) leaves that folder; the same command again computes only the chunks
that have no file, then writes the outputs from the files in a fixed order (one thread), so
the map is byte-for-byte the one an uninterrupted run writes. The folder is removed once the
outputs are published.

Chunk files rather than the partial GeoTIFF itself: GDAL keeps written tiles in its cache, so
after a SIGKILL a tile counted as written may never have reached the disk; a file renamed into
place is there or not. The price is that a resumable run writes each chunk twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np

from .errors import CssdError, writing

REQUEST_FILE = "request.json"


def state_folder(output: str) -> Path:
    """The hidden folder of a resumable run of ``output``."""
    path = Path(output.rstrip("/\\"))
    return path.parent / f".{path.name}.resume"


def file_digest(path: str) -> str:
    """sha256 of a file (a model's), read in pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


class ResumeState:
    """The chunk files of one resumable run. ``request`` is everything the chunks depend on
    (model digest, scene, options, chunk side); a folder left by a different request is refused."""

    def __init__(self, output: str, request: dict[str, Any]) -> None:
        self.output = output
        self.folder = state_folder(output)
        record = self.folder / REQUEST_FILE
        with writing(str(self.folder)):
            if record.exists():
                saved = json.loads(record.read_text(encoding="utf-8"))
                if saved != request:
                    changed = sorted(k for k in set(saved) | set(request) if saved.get(k) != request.get(k))
                    raise CssdError(f"{self.folder}: holds an unfinished run of another request (differs in "
                                    f"{', '.join(changed)}); run the same command as then, or delete that folder "
                                    "to start again")
            else:
                self.folder.mkdir(exist_ok=True)
                tmp = record.with_suffix(".tmp")
                tmp.write_text(json.dumps(request, sort_keys=True), encoding="utf-8")
                os.replace(tmp, record)

    def _file(self, layer: str, row: int, col: int) -> Path:
        return self.folder / f"{layer}-{row}-{col}.npy"

    def done(self, layers: Sequence[str], row: int, col: int) -> bool:
        """Whether every layer of the chunk starting at (``row``, ``col``) is saved."""
        return all(self._file(layer, row, col).exists() for layer in layers)

    def target(self, layer: str) -> _ChunkFiles:
        """A ``dask.array.store`` target that saves each block of ``layer`` as its file."""
        return _ChunkFiles(self, layer)

    def saved(self, layer: str, like: dsa.Array) -> dsa.Array:
        """The lazy array of ``layer`` read back from its chunk files (chunks and dtype of ``like``)."""
        def load_chunk(block_info: dict | None = None) -> np.ndarray:
            assert block_info is not None
            location = block_info[None]["array-location"]
            return np.load(self._file(layer, location[-2][0], location[-1][0]))

        return dsa.map_blocks(load_chunk, chunks=like.chunks, dtype=like.dtype,
                              meta=np.empty((0,) * like.ndim, like.dtype))

    def remove(self) -> None:
        """Delete the folder (the outputs are published)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class _ChunkFiles:
    def __init__(self, state: ResumeState, layer: str) -> None:
        self.state, self.layer = state, layer

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        rows, cols = key[-2:]
        path = self.state._file(self.layer, rows.start or 0, cols.start or 0)
        tmp = path.with_name(path.name + ".tmp")
        with writing(str(path)):
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(block))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
