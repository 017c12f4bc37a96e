"""Build a method's model for a run, in one place: `run`, `eval` and `predict` all go through `build_model`.

It creates the backbone (weights, activation, the seed of random weights), seeds the method's own random
initialisation with the run's seed, builds the model, resolves the preprocessing it is fed with, and counts
parameters honestly (the model holds only the modules the method runs; the image tower is counted apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from parbench.backbones import Backbone, Preprocess, create_backbone
from parbench.cards import Card
from parbench.data.transforms import resolve_preprocess
from parbench.engine.config import TrainConfig
from parbench.engine.params import count_params, frozen_state
from parbench.errors import ParbenchError
from parbench.methods import MethodSpec, check_backbone, method_where


@dataclass
class Built:
    method: MethodSpec
    card: Card
    cfg: TrainConfig
    options: Any
    backbone: Backbone
    model: nn.Module
    preprocess: Preprocess
    compiled: Any = None  # torch.compile(model), made on the first evaluation that asks for it (cfg.compile)
    tower_params: int = 0  # the image tower's parameters as built, before a method adds to it (LoRA injects)
    frozen_digest: str = ""  # frozen_sha256() as built (see there)

    def counts(self) -> dict[str, int]:
        """Parameters of what the method runs (total, trainable) and of the image tower alone."""
        total, trainable = count_params(self.model)
        return {"total_params": total, "trainable_params": trainable, "image_tower_params": self.tower_params}

    def frozen_sha256(self) -> str:
        """Digest of every tensor a run does not save (frozen weights, random or loaded), as built: a restored
        model must match it, so a changed weight file or a re-drawn random tower is caught, not silently
        evaluated. Taken when the model is built, before training: peft's LoRA on nn.MultiheadAttention merges
        and unmerges its update into the frozen weight on every forward, which moves it by float rounding, so a
        digest taken after training would refuse every LoRA run's own checkpoint."""
        if not self.frozen_digest:
            from parbench.hashing import tensors_sha256

            self.frozen_digest = tensors_sha256(frozen_state(self.model))
        return self.frozen_digest


def build_checked(method: MethodSpec, backbone: Backbone, card: Card, options: Any) -> nn.Module:
    """`method.build`, with what the engine needs of its result checked: an nn.Module, with `encode` and
    `head` for a feature method. A plugin's own failure while building is one error naming the plugin."""
    where = method_where(method)
    try:
        model = method.build(backbone, card, options)
    except ParbenchError:
        raise
    except Exception as e:
        if method.builtin:
            raise
        raise ParbenchError(where, "build(backbone, card, options) -> nn.Module", f"{type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ParbenchError(where, "build(backbone, card, options) -> nn.Module", type(model).__name__)
    if method.trains and not any(p.requires_grad for p in model.parameters()):
        raise ParbenchError(
            where,
            "a model with parameters that train (requires_grad), as the method trains "
            "(MethodSpec(trains=False) for an evaluation-only method)",
            "none",
        )
    if method.uses_features and not (callable(getattr(model, "encode", None)) and hasattr(model, "head")):
        raise ParbenchError(
            where, "a feature method's model with encode(images) and head(features)", "no encode or head"
        )
    return model


def build_model(
    method: MethodSpec,
    card: Card,
    cfg: TrainConfig,
    options: Any,
    backbone: str,
    pretrained: str | None,
    seed: int,
    quick_gelu: bool | None = None,
) -> Built:
    """The one place a method's model is built for a run, an eval or a prediction: the backbone (weights, the
    seed of random weights), the method's own init seeded with the run's seed, the preprocessing it is fed."""
    from parbench.engine.train import seed_everything

    check_backbone(method, backbone)
    bb = create_backbone(backbone, pretrained, seed=seed, quick_gelu=quick_gelu)
    tower = sum(p.numel() for p in bb.visual.parameters())
    seed_everything(seed)  # prompts, heads and other method-side init follow the run's seed, not the backbone's
    model = build_checked(method, bb, card, options)
    if cfg.grad_checkpointing:  # the method's own tower loop first (PromptPAR), else open_clip's
        target = model if hasattr(model, "set_grad_checkpointing") else bb.model
        target.set_grad_checkpointing(True)
    pre = resolve_preprocess(bb.preprocess, cfg, getattr(model, "preprocess_defaults", None))
    built = Built(method, card, cfg, options, bb, model, pre, tower_params=tower)
    built.frozen_sha256()  # as built, before anything trains
    return built
