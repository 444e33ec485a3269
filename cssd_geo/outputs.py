"""Output files: checked before long work starts, written under hidden temporary names, and
published together when the run has finished.

Every file cssd-geo writes (maps, side outputs, styles, quicklooks, models, reports, plots,
JSON) goes through an :class:`OutputSet`: a run asks it for a temporary path beside each
output, writes there, and only a run that ends without an error renames them all to their
final names. A failed or interrupted run deletes its temporaries, so no output is ever left
looking complete when it is not.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from .errors import CssdError, writing


def check_output(path: str | os.PathLike[str], overwrite: bool,
                 inputs: tuple[str | os.PathLike[str] | None, ...] = ()) -> str:
    """Refuse an output path that cannot or must not be written; return it as a string."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    for other in inputs:
        if other is not None and os.path.abspath(os.fspath(other)) == os.path.abspath(path):
            raise CssdError(f"{path}: the output path is also an input; write to another file")
    if not os.path.isdir(folder):
        raise CssdError(f"{path}: the folder {folder} does not exist; create it or choose another output path")
    if not _writable(folder):
        raise CssdError(f"{path}: the folder {folder} is not writable; choose another output path")
    if os.path.exists(path) and not overwrite:
        raise CssdError(f"{path}: already exists; pass --overwrite to replace it or choose another path")
    return path


def _writable(folder: str) -> bool:
    """Whether a file can be created in ``folder`` (tried, not guessed from permission bits,
    which say nothing of read-only file systems and nothing at all for root)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".cssd-write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


class OutputSet:
    """The outputs of one run, written under temporary names and published together.

    As a context manager: on a clean exit every registered output is renamed to its final
    path (:meth:`publish`); on an error or interruption every temporary is deleted.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []  # (temporary, final)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.publish()
        else:
            self.discard()

    def temporary(self, path: str, folder: bool = False, suffix: str | None = None) -> str:
        """A new hidden temporary file (or folder) beside ``path`` that becomes ``path`` on
        publication. Its name ends in ``suffix`` (default: ``path``'s extension), so writers
        that choose a format by the name work."""
        where = os.path.dirname(os.path.abspath(path))
        prefix = f".{os.path.basename(path.rstrip(os.sep))}.partial-"
        if suffix is None:
            suffix = os.path.splitext(path.rstrip(os.sep))[1]
        with writing(path):
            if folder:
                tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=where)
            else:
                fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=where)
                os.close(fd)
        self._pending.append((tmp, path))
        return tmp

    def scratch(self, path: str, suffix: str | None = None) -> str:
        """A temporary file beside ``path`` for intermediate work; deleted with the set and
        never published."""
        tmp = self.temporary(path, suffix=suffix)
        self._pending[-1] = (tmp, "")
        return tmp

    def publish(self) -> None:
        """Rename every finished temporary to its final path (replacing what is there), with
        the permissions a plainly created file would have."""
        pending, self._pending = self._pending, []
        try:
            for tmp, path in pending:
                if not path:
                    _remove(tmp)
                    continue
                with writing(path):
                    _replace(tmp, path)
        finally:
            for tmp, _ in pending:
                _remove(tmp)

    def discard(self) -> None:
        """Delete every temporary; nothing is published."""
        pending, self._pending = self._pending, []
        for tmp, _ in pending:
            _remove(tmp)


@contextmanager
def output_file(path: str, outputs: OutputSet | None = None, suffix: str | None = None) -> Iterator[str]:
    """A temporary path to write ``path`` through: published when the block ends cleanly, or
    with ``outputs`` when that set is published (so a run's outputs appear together)."""
    if outputs is not None:
        yield outputs.temporary(path, suffix=suffix)
        return
    with OutputSet() as own:
        yield own.temporary(path, suffix=suffix)


def write_json(path: str, document: Any, outputs: OutputSet | None = None) -> None:
    """A JSON report (indented) at ``path``, published at once or with ``outputs``."""
    with writing(path), output_file(path, outputs) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)


def _replace(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path`` after giving it the permissions of a plainly created file or
    folder (mkstemp and mkdtemp make them private to the user); an existing folder at
    ``path`` (a Zarr store) is replaced whole."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, (0o777 if os.path.isdir(tmp) else 0o666) & ~mask)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)
