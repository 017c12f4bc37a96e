"""Parameter accounting and freezing, shared by every method and by `methods info`."""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn as nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; works on meta-device models."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def freeze(module: nn.Module, trainable: bool = False) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


def set_trainable(model: nn.Module, names: Iterable[str]) -> None:
    """Make exactly the parameters whose names are listed trainable; everything else frozen."""
    names = set(names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)


def trainable_state(model: nn.Module) -> dict:
    """Only what trains (plus buffers of modules that hold trained statistics, e.g. BatchNorm)."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    out = {}
    for n, t in model.state_dict().items():
        owner = n.rsplit(".", 1)[0]
        if n in keep or any(k.rsplit(".", 1)[0] == owner for k in keep):
            out[n] = t.detach().clone()
    return out
