"""The one exception type users see.

Library code raises `ParbenchError`; the CLI catches it once, prints one line and exits non-zero
(the traceback only with `--debug`).
"""

from __future__ import annotations

from pathlib import Path


class ParbenchError(Exception):
    """A user-facing error: which file (or thing), what was expected, what was found."""

    def __init__(self, where: str | Path | None, expected: str, found: str | None = None):
        self.where = str(where) if where is not None else None
        self.expected = expected
        self.found = found
        parts = [f"{self.where}: " if self.where else "", expected]
        if found is not None:
            parts.append(f"; found {found}")
        super().__init__("".join(parts))


class Diverged(ParbenchError):
    """Training produced a non-finite loss: the run stops and is recorded as failed, never scored."""

    def __init__(self, epoch: int, step: int, loss: float, where: str | None = None):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            where or "training",
            "a finite loss (lower the learning rate?)",
            f"loss {loss} at epoch {epoch}, step {step}",
        )
