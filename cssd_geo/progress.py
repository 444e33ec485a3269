"""One small protocol through which long work reports progress and checks cancellation.

The library calls a :class:`Progress`; the CLI renders it with tqdm (:class:`TqdmProgress`) or
as JSON lines for a program that drives it (:class:`JsonLinesProgress`), QGIS with its feedback
object. The base class is silent and never cancels.
"""
from __future__ import annotations

import json
import sys
from typing import TextIO

from .errors import Cancelled


class Progress:
    """Receiver of progress events. Subclass and override what you want to show."""

    def stage(self, name: str, total: int) -> None:
        """A stage of ``total`` steps named ``name`` begins."""

    def advance(self, steps: int = 1, note: str = "") -> None:
        """``steps`` more steps of the current stage are done; ``note`` is a short status."""

    def message(self, text: str) -> None:
        """Something the user should read (a warning or a summary line)."""

    def cancelled(self) -> bool:
        """True when the user asked to stop; the library then raises :class:`Cancelled`."""
        return False

    def check(self, what: str = "the run") -> None:
        """Raise :class:`Cancelled` if the user asked to stop."""
        if self.cancelled():
            raise Cancelled(what)


class TqdmProgress(Progress):
    """Renders stages as tqdm bars on stderr and messages as lines."""

    def __init__(self, disable: bool | None = None) -> None:
        self._bar = None
        self._disable = disable

    def stage(self, name: str, total: int) -> None:
        """Start a progress bar for a stage of ``total`` steps."""
        from tqdm.auto import tqdm

        self.close()
        self._bar = tqdm(total=total, desc=name, unit="step", file=sys.stderr,
                         disable=self._disable, dynamic_ncols=True)

    def advance(self, steps: int = 1, note: str = "") -> None:
        """Move the bar on by ``steps``, with an optional note beside it."""
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(steps)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        """Close the bar, if one is open."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonLinesProgress(Progress):
    """Writes each event as one JSON object per line on stderr, for a program that runs
    ``cssd-geo`` and shows the progress itself (the QGIS plugin does):
    ``{"stage": name, "total": n}``, ``{"advance": k}`` and ``{"message": text}``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _emit(self, event: dict) -> None:
        stream = self.stream or sys.stderr
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    def stage(self, name: str, total: int) -> None:
        """Emit ``{"stage": name, "total": n}``."""
        self._emit({"stage": name, "total": total})

    def advance(self, steps: int = 1, note: str = "") -> None:
        """Emit ``{"advance": k}`` (and ``"note"`` when given)."""
        self._emit({"advance": steps, **({"note": note} if note else {})})

    def message(self, text: str) -> None:
        """Emit ``{"message": text}``."""
        self._emit({"message": text})

    def close(self) -> None:
        """Nothing to close (the CLI calls this on every progress)."""
