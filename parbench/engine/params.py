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


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """The optimizer's parameter groups for a model: its own `param_groups(cfg)` where it defines one (each group
    a dict with "params", "lr", "weight_decay" and optionally "name" and "warmup_epochs"), else one group of
    every trainable parameter at the recipe's lr and weight decay. The engine clips gradients per group."""
    groups = model.param_groups(cfg) if hasattr(model, "param_groups") else None
    if groups is None:
        groups = [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
            }
        ]
    return groups


def freeze(module: nn.Module, trainable: bool = False) -> nn.Module:
    """Set requires_grad on every parameter of `module` (False by default); returns the module, so a method
    can write `self.visual = freeze(backbone.visual)`."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _saved_names(model: nn.Module) -> set[str]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    owners = {_owner(n) for n in names}
    return names | {n for n, _ in model.named_buffers() if _owner(n) in owners}


def trainable_state(model: nn.Module) -> dict:
    """What a run saves: every trainable parameter plus the buffers (BatchNorm statistics) of the modules
    that own one, so a restored model predicts exactly as the trained one did."""
    saved = _saved_names(model)
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items() if n in saved}


def frozen_state(model: nn.Module) -> dict:
    """Everything `trainable_state` leaves out: the tensors a restore must re-create identically."""
    saved = _saved_names(model)
    return {n: t for n, t in model.state_dict().items() if n not in saved}
