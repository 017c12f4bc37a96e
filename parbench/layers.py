"""Small building blocks that methods share, written against open_clip's modules (never forks of them)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def block_forward(blk: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """An open_clip ResidualAttentionBlock on batch-first x (B, L, W), with fused attention (no attention
    weights materialised) and the block's own weights, norms, activation and layer scales.
    `mask`: boolean (L, L), True = may attend; None = full attention."""
    attn = blk.attn
    B, L, W = x.shape
    H = attn.num_heads
    y = blk.ln_1(x)
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)  # (B, L, 3W)
    q, k, v = qkv.view(B, L, 3, H, W // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, Dh)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    o = attn.out_proj(o.transpose(1, 2).reshape(B, L, W))
    x = x + blk.ls_1(o)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def prompt_init(shape: tuple[int, ...], width: int, patch: int) -> torch.Tensor:
    """Uniform(-v, v), v = sqrt(6 / (3 * patch^2 + width)): VPT's initialisation, which PromptPAR keeps."""
    v = math.sqrt(6.0 / float(3 * patch * patch + width))
    return torch.empty(shape).uniform_(-v, v)


class LogitsModel(nn.Module):
    """A module that returns a (B, K) tensor, wrapped to the engine's model contract {"logits": (B, K)}; its
    `param_groups(cfg)` is the wrapped module's where it has one (`parbench.api.plain_method` uses this)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.num_attributes = getattr(net, "num_attributes", 0)

    def forward(self, images: torch.Tensor) -> dict:
        out = self.net(images)
        return out if isinstance(out, dict) else {"logits": out}

    def param_groups(self, cfg) -> list[dict] | None:
        groups = getattr(self.net, "param_groups", None)
        return groups(cfg) if groups is not None else None
