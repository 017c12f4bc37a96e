"""What a method declares: how to build its model, its default recipe, and which parameters train.

Methods never own training loops: the engine (parbench/engine) does. A method model's `forward(images)`
returns a dict with "logits" (B x K) and optionally "aux" (list of B x K logits for auxiliary losses).
Feature-based methods (linear probe) also expose `encode(images)` and `head(features)`. A model holds only the
modules it runs (a baseline that never uses CLIP's text tower does not keep it), so counting its parameters
counts what the method costs.
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
    options: type | None = None  # dataclass of method-specific options (--set reaches them too)
    uses_features: bool = False  # train on cached frozen features (encode once, then head)
    trains: bool = True  # False: evaluation only (zero-shot)
    # also report decisions at thresholds fitted on the train/val split (never test), beside the fixed one
    fits_thresholds: bool = False
    # (checkpoint dict, card, backbone name | None, overrides, source) -> (Built, report of what was inferred):
    # reads a method's own foreign checkpoint format (PromptPAR's reference files) for eval / predict
    import_checkpoint: Callable[..., Any] | None = None
    # (loaded checkpoint object) -> bool: whether import_checkpoint reads this file
    accepts_checkpoint: Callable[[Any], bool] | None = None
    # settings that let the model be built on torch's meta device for counting (no weights files needed)
    meta_overrides: dict[str, Any] = field(default_factory=dict)
    default_backbone: str = "ViT-L-14"


def get_method(name: str) -> MethodSpec:
    return methods.get(name)


def list_methods(pattern: str | None = None) -> list[str]:
    return methods.names(pattern)


def method_for_checkpoint(obj: Any, source: str) -> MethodSpec:
    """The registered method whose importer reads this foreign checkpoint."""
    from parbench.errors import ParbenchError

    for name in list_methods():
        spec = get_method(name)
        if spec.accepts_checkpoint is not None and spec.accepts_checkpoint(obj):
            return spec
    found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ParbenchError(source, "a parbench checkpoint (a run's trainable.pt) or a PromptPAR reference checkpoint",
                        f"keys {found}")  # fmt: skip
