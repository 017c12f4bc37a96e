"""Linear probe: a frozen image tower (CLIP's, or any timm model's pooled output), features computed once and
cached, a linear head on top."""

from __future__ import annotations

import torch
import torch.nn as nn

from baselines.heads import AttributeHead, encode_image
from parbench.api import MethodSpec, freeze


class LinearProbe(nn.Module):
    def __init__(self, backbone, num_attributes: int):
        super().__init__()
        self.visual = freeze(backbone.visual)  # the image tower only: the text tower is never run
        self.head = AttributeHead(backbone.embed_dim, num_attributes)
        self.num_attributes = num_attributes

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # no torch.no_grad here: the tower is frozen (no parameter gradients), callers that cache features run
        # under no_grad, and an attack (parbench robust) needs the gradient with respect to the images
        return encode_image(self.visual, images).float()

    def forward(self, images: torch.Tensor) -> dict:
        return {"logits": self.head(self.encode(images))}


def build(backbone, card, options=None) -> LinearProbe:
    return LinearProbe(backbone, card.num_attributes)


SPEC = MethodSpec(
    name="linear-probe",
    description="frozen image tower (CLIP or timm), cached features, one linear head (AdamW)",
    build=build,
    recipe={"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "epochs": 30, "batch_size": 64},
    uses_features=True,
    backbones=("open_clip", "timm"),
)
