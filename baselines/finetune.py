"""Full fine-tuning: every parameter of the image tower (CLIP's, or any timm model's) trains, plus a per-attribute
linear head.

This is the "full fine-tuning" row the PromptPAR paper compares prompt tuning against. The encoder gets a
lower learning rate than the head (`encoder_lr_scale`), optionally decayed layer by layer (`layer_decay`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from baselines.heads import AttributeHead, encode_image
from parbench.api import TOWER_TUNING, MethodSpec, ParbenchError, freeze


@dataclass(frozen=True)
class FinetuneOptions:
    encoder_lr_scale: float = 0.1  # encoder lr = scale * head lr
    layer_decay: float = 1.0  # < 1: layer-wise lr decay from the top block down (1.0 = off)

    RANGES: ClassVar[dict] = {"encoder_lr_scale": (0.0, None), "layer_decay": (0.0, 1.0)}


class Finetune(nn.Module):
    def __init__(self, backbone, num_attributes: int, options: FinetuneOptions):
        super().__init__()
        self.visual = freeze(backbone.visual, trainable=True)  # the text tower is never run: not kept
        self.head = AttributeHead(backbone.embed_dim, num_attributes)
        self.num_attributes = num_attributes
        self.options = options
        self._blocks = backbone.blocks()  # a plain list: the modules are registered once, under visual
        if options.layer_decay != 1.0 and not self._blocks:
            raise ParbenchError(
                f"finetune on {backbone.name}",
                "a tower with blocks or stages for layer_decay",
                "none found (use layer_decay=1.0)",
            )

    def forward(self, images: torch.Tensor) -> dict:
        return {"logits": self.head(encode_image(self.visual, images).float())}

    def param_groups(self, cfg) -> list[dict]:
        visual = self.visual
        blocks = self._blocks
        depth = len(blocks)
        groups = [
            {"name": "head", "params": list(self.head.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}
        ]
        enc_lr = cfg.lr * self.options.encoder_lr_scale
        in_block = set()
        for i, block in enumerate(blocks):
            ps = [p for p in block.parameters() if p.requires_grad]
            in_block.update(id(p) for p in ps)
            scale = self.options.layer_decay ** (depth - 1 - i)
            groups.append({"name": f"block{i}", "params": ps, "lr": enc_lr * scale, "weight_decay": cfg.weight_decay})
        rest = [p for p in visual.parameters() if p.requires_grad and id(p) not in in_block]
        groups.append(
            {
                "name": "embed",
                "params": rest,
                "lr": enc_lr * self.options.layer_decay**depth,
                "weight_decay": cfg.weight_decay,
            }
        )
        return groups


def build(backbone, card, options: FinetuneOptions | None = None) -> Finetune:
    return Finetune(backbone, card.num_attributes, options or FinetuneOptions())


SPEC = MethodSpec(
    name="finetune",
    description="full fine-tuning of the image tower (CLIP or timm) + linear head (AdamW, lower encoder lr)",
    build=build,
    recipe=TOWER_TUNING,
    options=FinetuneOptions,
    backbones=("open_clip", "timm"),
)
