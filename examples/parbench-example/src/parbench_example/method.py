"""`attr-query`: one learned query per attribute cross-attends over the frozen image tower's tokens.

Any tower parbench builds works (an open_clip model or `timm:NAME`): `image_tokens` gives its last-layer tokens
(B, N, W). Query k's attended feature is scored by its own linear unit, so each attribute looks where it needs
to in the image instead of sharing one pooled vector. Only the queries, the attention and the scorers train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from parbench.api import MethodSpec, ParbenchError, freeze, image_tokens


@dataclass(frozen=True)
class QueryOptions:
    heads: int = 4  # attention heads of the query block (must divide the tower's token width)
    dropout: float = 0.0  # attention dropout

    RANGES: ClassVar[dict] = {"heads": (1, None), "dropout": (0.0, 1.0)}


class AttributeQueries(nn.Module):
    def __init__(self, backbone, num_attributes: int, options: QueryOptions):
        super().__init__()
        width = backbone.token_dim
        if width % options.heads:
            raise ParbenchError(
                f"attr-query on {backbone.name}", f"heads dividing the token width {width}", str(options.heads)
            )
        self.visual = freeze(backbone.visual)
        self.queries = nn.Parameter(torch.randn(num_attributes, width) * width**-0.5)  # (K, W)
        self.attn = nn.MultiheadAttention(width, options.heads, dropout=options.dropout, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.score_w = nn.Parameter(torch.zeros(num_attributes, width))  # (K, W): one scorer per attribute
        self.score_b = nn.Parameter(torch.zeros(num_attributes))
        self.num_attributes = num_attributes

    def forward(self, images: torch.Tensor) -> dict:
        with torch.no_grad():
            tokens = image_tokens(self.visual, images).float()  # (B, N, W)
        q = self.queries.unsqueeze(0).expand(images.shape[0], -1, -1)  # (B, K, W)
        attended, _ = self.attn(q, tokens, tokens, need_weights=False)  # (B, K, W)
        z = self.norm(attended + q)
        return {"logits": (z * self.score_w).sum(-1) + self.score_b}  # (B, K)


def build(backbone, card, options: QueryOptions | None = None) -> AttributeQueries:
    return AttributeQueries(backbone, card.num_attributes, options or QueryOptions())


SPEC = MethodSpec(
    name="attr-query",
    description="frozen image tower + one learned query per attribute (cross-attention over its tokens)",
    build=build,
    recipe={"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "epochs": 10, "batch_size": 32},
    options=QueryOptions,
    backbones=("open_clip", "timm"),
)
