"""The one exception type a user can cause, cancellation, and the translation of file-system
and GDAL failures into it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CssdError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the file, the problem and the fix; the CLI and
    QGIS show it as it is, without a traceback.
    """


class Cancelled(CssdError):
    """Long work was stopped through the progress callback."""

    def __init__(self, what: str = "the run") -> None:
        super().__init__(f"cancelled: {what} was stopped before it finished; nothing was written")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def root_cause(exc: BaseException) -> BaseException:
    """The innermost explicit cause (GDAL's own message under rasterio's "Read failed")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _io_errors() -> tuple:
    from rasterio._err import CPLE_BaseError

    return OSError, CPLE_BaseError


@contextmanager
def reading(path: str) -> Iterator[None]:
    """Report a failure to read the raster ``path`` (a truncated or corrupt file, a vanished
    disk) as a :class:`CssdError`."""
    try:
        yield
    except CssdError:
        raise
    except _io_errors() as exc:
        raise CssdError(f"{path}: cannot read the raster ({first_line(root_cause(exc))}); the file may be truncated or "
                        "corrupt: re-export or re-download it") from exc


@contextmanager
def writing(path: str) -> Iterator[None]:
    """Report a failure to write ``path`` (disk full, folder removed or read-only) as a
    :class:`CssdError`."""
    try:
        yield
    except CssdError:
        raise
    except _io_errors() as exc:
        raise CssdError(f"{path}: writing failed ({first_line(root_cause(exc))}); check the free space and permissions "
                        "of the output folder") from exc
