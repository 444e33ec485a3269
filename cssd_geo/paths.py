"""Checks on output paths before long work starts, so a run never fails at its very end."""
from __future__ import annotations

import os
import tempfile

from .errors import CssdError


def check_output(path: str | os.PathLike, overwrite: bool, inputs: tuple = ()) -> str:
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


def publish(tmp: str, path: str) -> None:
    """Rename a finished temporary file or folder to ``path``, first giving it the permissions
    a plainly created one would have (mkstemp and mkdtemp make them private to the user)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, (0o777 if os.path.isdir(tmp) else 0o666) & ~mask)
    os.replace(tmp, path)
