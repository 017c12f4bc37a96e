"""Weights files in other projects' layouts (person-pretrained towers: HAP, SOLIDER), through key maps kept as
data in `keymaps.toml`: `--pretrained KEYMAP:/path/to/file` on a timm backbone. See that file for what a map says.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
import tomllib
from pathlib import Path

from parbench.errors import ParbenchError

KEYMAPS = Path(__file__).with_name("keymaps.toml")


@functools.cache
def keymaps() -> dict[str, dict]:
    return tomllib.loads(KEYMAPS.read_text())


def split(pretrained: str) -> tuple[str | None, str]:
    """("hap", "/w/hap.pth") for "hap:/w/hap.pth"; (None, pretrained) for anything else."""
    head, sep, rest = pretrained.partition(":")
    return (head, rest) if sep and head in keymaps() else (None, pretrained)


def keymap_sha(name: str) -> str:
    return hashlib.sha256(json.dumps(keymaps()[name], sort_keys=True).encode()).hexdigest()[:12]


def check(name: str, arch: str, path: Path) -> dict:
    """The map, after checking it fits the architecture and the file is there (one error saying where it looked)."""
    km = keymaps()[name]
    if not any(fnmatch.fnmatch(arch, pat) for pat in km["arch"]):
        raise ParbenchError(f"--pretrained {name}:...", f"a timm architecture among {km['arch']} ({km['title']})", arch)
    if not path.is_file():
        raise ParbenchError(
            f"--pretrained {name}:{path}",
            f"the {name} weights file ({km['title']}); looked for {path.resolve()}",
            "no such file",
        )
    return km


def _unfold_reduction(x):
    """MMDetection's patch-merging reduction (nn.Unfold channel order) back to the original Swin order."""
    out_c, in_c = x.shape
    return x.reshape(out_c, in_c // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3], :].reshape(out_c, in_c)


def _unfold_norm(x):
    (in_c,) = x.shape
    return x.reshape(in_c // 4, 4).transpose(0, 1)[[0, 2, 1, 3]].reshape(in_c)


TRANSFORMS = {"unfold_reduction": _unfold_reduction, "unfold_norm": _unfold_norm}


def apply(km: dict, ckpt, path: Path) -> dict:
    """The file's state dict in timm's (original) layout: unwrapped, stripped, dropped, renamed, transformed."""
    import torch

    for key in km.get("unwrap", []):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ParbenchError(
            path, "a state dict of tensors (after unwrapping " + ", ".join(km["unwrap"]) + ")", type(ckpt).__name__
        )
    out = {}
    for k, v in ckpt.items():
        for prefix in km.get("strip", []):
            k = k.removeprefix(prefix)
        if any(fnmatch.fnmatch(k, pat) for pat in km.get("drop", [])):
            continue
        for pattern, new in km.get("rename", []):
            k = re.sub(pattern, new, k)
        for pattern, name in km.get("transform", []):
            if fnmatch.fnmatch(k, pattern):
                v = TRANSFORMS[name](v)
        out[k] = v
    return out
