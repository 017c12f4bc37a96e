"""Parameter accounting and freezing, shared by every method and by `methods info`."""

from __future__ import annotations

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
