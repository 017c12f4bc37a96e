"""VPT-deep: learnable visual prompt tokens in every layer of the frozen CLIP image tower, and a linear head on
the pooled image embedding. No text, no regions, no fusion block: PromptPAR's own visual prompts without the
rest, which is both a parameter-efficient baseline and the ablation reviewers ask PromptPAR for.

The sequence is [CLS, P prompts, patches]; layer 0 inserts the prompts after CLS, and each layer below
`vis_depth` replaces them with its own (VPT-deep, as PromptPAR does); the output is CLIP's pooled embedding
(CLS -> ln_post -> proj), so the head sees what a linear probe of the same tower sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from baselines.heads import AttributeHead
from parbench.api import PROMPT_TUNING, MethodSpec, block_forward, freeze, prompt_init


@dataclass(frozen=True)
class VPTOptions:
    vis_prompt: int = 50  # prompt tokens per layer (PromptPAR's count)
    vis_depth: int = 24  # layers that get fresh prompts (capped at the tower's depth; only those are allocated)
    prompt_lr: float = 4e-3  # lr of the prompts (the head's is the recipe's lr), PromptPAR's clip_lr
    prompt_weight_decay: float = 1e-4

    RANGES: ClassVar[dict] = {"vis_prompt": (1, None), "vis_depth": (1, None), "prompt_lr": (0.0, None),
                              "prompt_weight_decay": (0.0, None)}  # fmt: skip


class VPTDeep(nn.Module):
    def __init__(self, backbone, num_attributes: int, options: VPTOptions):
        super().__init__()
        self.visual = freeze(backbone.model.visual)
        W = self.visual.conv1.out_channels
        self.depth = min(options.vis_depth, len(self.visual.transformer.resblocks))
        patch = self.visual.conv1.kernel_size[0]
        self.prompts = nn.Parameter(prompt_init((self.depth, options.vis_prompt, W), W, patch))  # (D, P, W)
        self.head = AttributeHead(backbone.embed_dim, num_attributes)
        self.num_attributes = num_attributes
        self.options = options
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        v, P = self.visual, self.prompts.shape[1]
        x = v.conv1(images.to(v.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # (B, G*G, W)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1+G*G, W)
        x = v.ln_pre(x)
        for layer, blk in enumerate(v.transformer.resblocks):
            if layer < self.depth:
                p = self.prompts[layer].to(x.dtype).expand(x.shape[0], -1, -1)  # (B, P, W)
                x = torch.cat([x[:, :1], p, x[:, 1 if layer == 0 else 1 + P :]], dim=1)  # (B, 1+P+G*G, W)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block_forward, blk, x, None, use_reentrant=False)
            else:
                x = block_forward(blk, x, None)
        return v.ln_post(x[:, 0]) @ v.proj  # (B, D): CLIP's pooled embedding

    def forward(self, images: torch.Tensor) -> dict:
        return {"logits": self.head(self.encode(images).float())}

    def param_groups(self, cfg) -> list[dict]:
        o = self.options
        return [
            {"name": "head", "params": list(self.head.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"name": "prompts", "params": [self.prompts], "lr": o.prompt_lr, "weight_decay": o.prompt_weight_decay},
        ]


def build(backbone, card, options: VPTOptions | None = None) -> VPTDeep:
    return VPTDeep(backbone, card.num_attributes, options or VPTOptions())


SPEC = MethodSpec(
    name="vpt-deep",
    description="VPT-deep: visual prompts in every layer of the frozen image tower + linear head (no text)",
    build=build,
    recipe=PROMPT_TUNING,  # PromptPAR's: the comparison isolates what its text, regions and fusion add
    options=VPTOptions,
)
