"""Reading arrays that users hand to parbench (`parbench score --labels L.npy --probs P.npy`).

Only numbers are read: numpy's pickled object arrays are refused, never loaded (unpickling runs code), and the
error says so in parbench's words rather than passing on numpy's "load it unsafely" advice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parbench.errors import ParbenchError


def _header_dtype(path: Path) -> np.dtype | None:
    """The dtype an .npy file's header declares, or None where the header cannot be read."""
    try:
        with path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return read(f)[2]
    except (OSError, ValueError):
        return None


def load_npy(path: str | Path) -> np.ndarray:
    """One numeric array from an .npy file; an .npz archive, an object array or a damaged file is one error
    naming the file."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        dtype = _header_dtype(path) if path.is_file() else None
        if dtype is not None and dtype.hasobject:
            found = (
                "an array of Python objects (a pickle); parbench never loads pickles from .npy files: "
                "save the values as a numeric array (np.save(path, values.astype(float)))"
            )
            raise ParbenchError(path, "a .npy array of numbers", found) from None
        raise ParbenchError(path, "a .npy array", str(e)) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise ParbenchError(path, "a .npy array (one array per file)", f"an .npz archive of {list(arr.files)}")
    return arr
