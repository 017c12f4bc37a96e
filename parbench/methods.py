"""What a method declares: how to build its model, its default recipe, and which parameters train.

Methods never own training loops: the engine (parbench/engine) does. A method model's `forward(images)`
returns a dict with "logits" (B x K) and optionally "aux" (list of B x K logits for auxiliary losses).
Feature-based methods (linear probe) also expose `encode(images)` and `head(features)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parbench.registry import methods


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    build: Callable[..., Any]  # (backbone, card, options) -> nn.Module with requires_grad set
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (the method's defaults)
    param_groups: Callable[..., list[dict]] | None = None  # (model, cfg) -> optimizer groups
    options: type | None = None  # dataclass of method-specific options (--set reaches them too)
    uses_features: bool = False  # train on cached frozen features (encode once, then head)
    trains: bool = True  # False: evaluation only (zero-shot)
    # (checkpoint dict, card, backbone name | None, overrides, source) -> (model, TrainConfig, options, backbone):
    # reads a method's own foreign checkpoint format (PromptPAR's reference files) for eval / predict
    import_checkpoint: Callable[..., Any] | None = None
    default_backbone: str = "ViT-L-14"
    default_pretrained: str = "openai"


def get_method(name: str) -> MethodSpec:
    return methods.get(name)


def list_methods(pattern: str | None = None) -> list[str]:
    return methods.names(pattern)


def default_groups(model: Any, cfg: Any) -> list[dict]:
    """One group of every trainable parameter at the recipe's lr."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"name": "all", "params": params, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
             "warmup_epochs": cfg.warmup_epochs}]  # fmt: skip
