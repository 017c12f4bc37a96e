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
from parbench.methods import MethodSpec


@dataclass
class Built:
    method: MethodSpec
    card: Card
    cfg: TrainConfig
    options: Any
    backbone: Backbone
    model: nn.Module
    preprocess: Preprocess

    def counts(self) -> dict[str, int]:
        """Parameters of what the method runs (total, trainable) and of the image tower alone."""
        total, trainable = count_params(self.model)
        tower = sum(p.numel() for p in self.backbone.model.visual.parameters())
        return {"total_params": total, "trainable_params": trainable, "image_tower_params": tower}

    def frozen_sha256(self) -> str:
        """Digest of every tensor a run does not save (frozen weights, random or loaded): a restored model must
        match it, so a changed weight file or a re-drawn random tower is caught, not silently evaluated."""
        from parbench.hashing import tensors_sha256

        return tensors_sha256(frozen_state(self.model))


def build_model(method: MethodSpec, card: Card, cfg: TrainConfig, options: Any, backbone: str, pretrained: str | None,
                seed: int, quick_gelu: bool | None = None) -> Built:  # fmt: skip
    from parbench.engine.train import seed_everything

    bb = create_backbone(backbone, pretrained, seed=seed, quick_gelu=quick_gelu)
    seed_everything(
        seed
    )  # prompts, heads and other method-side init follow the run's seed, not the backbone's
    model = method.build(bb, card, options)
    if cfg.grad_checkpointing:  # the method's own tower loop first (PromptPAR), else open_clip's
        target = model if hasattr(model, "set_grad_checkpointing") else bb.model
        target.set_grad_checkpointing(True)
    pre = resolve_preprocess(bb.preprocess, cfg, getattr(model, "preprocess_defaults", None))
    return Built(method, card, cfg, options, bb, model, pre)
