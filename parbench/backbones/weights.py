"""Weight files: an open_clip or plain state dict (loaded weights-only), or an OpenAI JIT archive."""

from __future__ import annotations

import zipfile
from pathlib import Path

from parbench.errors import ParbenchError
from parbench.torchfile import load_weights_only


def _is_jit_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_weights_file(path: Path) -> tuple[dict, bool]:
    """State dict from an open_clip/plain checkpoint or an OpenAI JIT archive; (state_dict, is_openai_jit)."""
    import torch

    if _is_jit_archive(path):
        try:
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as e:
            raise ParbenchError(path, "an OpenAI CLIP TorchScript archive", str(e).splitlines()[0]) from None
        for k in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(k, None)
        return {k: v.float() for k, v in sd.items()}, True
    ckpt = load_weights_only(path, "a CLIP checkpoint (open_clip state dict or OpenAI JIT .pt)")
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ParbenchError(path, "a state dict of tensors", type(ckpt).__name__)
    if sd and next(iter(sd)).startswith("module."):
        sd = {k[7:]: v for k, v in sd.items()}
    return sd, False
