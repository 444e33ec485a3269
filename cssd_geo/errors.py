"""The one exception type a user can cause, and cancellation."""
from __future__ import annotations


class CssdError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the file, the problem and the fix; the CLI and
    QGIS show it as it is, without a traceback.
    """


class Cancelled(CssdError):
    """Long work was stopped through the progress callback."""

    def __init__(self, what: str = "the run") -> None:
        super().__init__(f"cancelled: {what} was stopped before it finished; nothing was written")
