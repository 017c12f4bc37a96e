"""The multimodal fusion model: the last block(s) of an ImageNet ViT-B/16 over [text tokens ; visual tokens],
per-attribute heads on the text positions, BatchNorm over the logits.

Module names follow the reference (`word_embed`, `visual_embed`, `blocks.0.norm1`, `attn.qkv`, `mlp.fc1`,
`norm`, `weight_layer.i`, `bn`) so importing its checkpoints is a short key map.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropPath(nn.Module):
    """Per-sample stochastic depth (timm semantics)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # fused; no attention weights are materialised
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act_layer(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A timm ViT block (pre-norm, qkv bias, LayerNorm eps 1e-6), key-compatible with timm checkpoints."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        self.norm1, self.attn = norm_layer(dim), Attention(dim, heads)
        self.norm2, self.mlp = norm_layer(dim), Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FusionModel(nn.Module):
    def __init__(
        self,
        in_dim: int,
        num_attributes: int,
        num_visual: int,
        dim: int = 768,
        heads: int = 12,
        mm_layers: int = 1,
        use_mm_former: bool = True,
        drop_path: float = 0.1,
    ):
        super().__init__()
        self.num_attributes = num_attributes
        self.word_embed = nn.Linear(in_dim, dim)
        self.visual_embed = nn.Linear(in_dim, dim)
        self.use_mm_former = use_mm_former
        if use_mm_former:
            self.blocks = nn.ModuleList([Block(dim, heads, drop_path=drop_path) for _ in range(mm_layers)])
        else:  # the reference's fallback: a Linear mixing along the token axis
            self.linear_layer = nn.Linear(num_attributes + num_visual, num_attributes)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.weight_layer = nn.ModuleList([nn.Linear(dim, 1) for _ in range(num_attributes)])
        self.bn = nn.BatchNorm1d(num_attributes)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text (A, C), visual (B, L, C) -> BN'd logits (B, A)."""
        B, A = visual.shape[0], self.num_attributes
        x = torch.cat([self.word_embed(text).expand(B, A, -1), self.visual_embed(visual)], dim=1)  # (B, A+L, D)
        if self.use_mm_former:
            for blk in self.blocks:
                x = blk(x)
        else:
            x = self.linear_layer(x.transpose(1, 2)).transpose(1, 2)  # (B, A, D)
        x = self.norm(x)[:, :A]  # only the text positions feed the heads
        w = torch.stack([h.weight[0] for h in self.weight_layer])  # (A, D)
        b = torch.stack([h.bias[0] for h in self.weight_layer])  # (A,)
        return self.bn((x * w).sum(-1) + b)

    def load_vit_b(self, state: dict, source: str) -> None:
        """Take the last mm_layers blocks and the final norm from a timm ViT-B/16 state dict."""
        from parbench.api import ParbenchError

        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mapping = {}
        for i in range(len(self.blocks)):
            src = depth - len(self.blocks) + i
            for k in self.blocks[i].state_dict():
                mapping[f"blocks.{i}.{k}"] = f"blocks.{src}.{k}"
        mapping.update({"norm.weight": "norm.weight", "norm.bias": "norm.bias"})
        missing = [s for s in mapping.values() if s not in state]
        if missing:
            raise ParbenchError(source, "a timm ViT-B/16 state dict", f"missing {missing[:4]}")
        own = self.state_dict()
        for dst, src in mapping.items():
            if own[dst].shape != state[src].shape:
                raise ParbenchError(source, f"{src} of shape {tuple(own[dst].shape)}", str(tuple(state[src].shape)))
            own[dst].copy_(state[src])
