"""Loading torch files that users hand to parbench (checkpoints, weights, resume states).

torch's own errors describe the bytes, not the file: random bytes read as a legacy pickle end in "OverflowError:
BYTEARRAY8 exceeds system's maximum size", a truncated archive in a miniz message. `unreadable` says what the
file is in the user's terms (not a torch checkpoint, or a damaged one) so every loader reports it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6 writes a zip archive
PICKLE_PROTO = b"\x80"  # legacy torch.save (and plain pickles) open with a PROTO opcode


def unreadable(path: str | Path, e: BaseException) -> str:
    """What was found, for a torch file that did not load."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as os_err:
        return os_err.strerror or str(os_err)
    if head != ZIP_MAGIC and head[:1] != PICKLE_PROTO:
        return "neither a torch.save zip archive nor a legacy torch pickle: not a torch checkpoint, or a damaged one"
    msg = str(e)
    if "Unsupported global" in msg:  # torch's weights-only unpickler refused a class: nothing was run
        name = msg.split("Unsupported global:", 1)[1].split()[1] if "Unsupported global:" in msg else "a class"
        return f"objects other than tensors and plain data ({name}): refused, since loading them could run code"
    first = msg.splitlines()[0].split(". ")[0][:120] if msg else ""  # torch's first sentence; the rest is advice
    detail = f"{type(e).__name__}: {first}" if first else type(e).__name__
    if head == ZIP_MAGIC:
        return f"a damaged torch archive, truncated or changed after saving ({detail})"
    return f"a pickle that is not a readable torch checkpoint: damaged, or written by another tool ({detail})"


def load_weights_only(path: str | Path, expected: str) -> Any:
    """torch.load with weights_only=True (tensors and plain data: nothing in the file can run code); a file that
    does not load is one error naming it."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, damaged, or holding objects weights_only refuses
        raise ParbenchError(path, expected, unreadable(path, e)) from None
