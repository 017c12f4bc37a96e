"""Shared pieces of the CLIP baselines: the per-attribute linear head and image encoding."""

from __future__ import annotations

import torch
import torch.nn as nn


class AttributeHead(nn.Module):
    """K independent logistic regressions on one embedding (a Linear(D, K) is K Linear(D, 1) side by side)."""

    def __init__(self, dim: int, num_attributes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, K)
        return self.fc(x)


def encode_image(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """CLIP's pooled, projected image embedding (B, D), not normalised: open_clip's `CLIP.encode_image`
    without its text tower, which the image baselines never run (and so neither keep nor count)."""
    return visual(images)
