"""Atomic writes: a temporary file beside the target, then a rename, so a reader never sees half a file and a
killed process leaves the old file (or none), never a truncated one. The file gets the permissions any new file
would (0666 less the umask), not the temporary file's private 0600, so a shared results folder stays readable."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """`write(tmp_path)` fills a temporary file, which then replaces `path` (parent folders are created)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    except OSError as e:
        raise ParbenchError(path.parent, "a writable folder", e.strerror or str(e)) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ParbenchError(path, "room to write this file", e.strerror or str(e)) from None
        if isinstance(e, RuntimeError) and _disk_full(path.parent):  # torch.save reports a full disk this way
            raise ParbenchError(path, "room to write this file", "No space left on device") from None
        raise


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_npz(path: str | Path, **arrays: Any) -> None:
    """np.savez through a file object: given a name without .npz, numpy would append the suffix."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save, atomically: a reader never sees half a file."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))
