"""LoRA on the image tower (through Hugging Face `peft`), with a linear head: the parameter-efficient baseline at
PromptPAR's budget. Low-rank updates W + (alpha / r) B A go into the attention projections (`attn`: the fused
q/k/v input projection and the output projection of every block) and, optionally, the MLP's two linear layers;
the tower itself stays frozen, B starts at zero so training starts from the pretrained model.

Targets are found by structure, so one rule serves CLIP's towers (nn.MultiheadAttention, `mlp.c_fc` /
`mlp.c_proj`) and timm's transformers (`attn.qkv` / `attn.proj`, `mlp.fc1` / `mlp.fc2`): an attention module
or the Linear layers of a module named `attn`; the Linear layers of a module named `mlp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from baselines.heads import AttributeHead, encode_image
from parbench.api import TOWER_TUNING, MethodSpec, ParbenchError, freeze

TARGETS = {"attn": ("attn",), "attn+mlp": ("attn", "mlp"), "mlp": ("mlp",)}


def target_modules(visual: nn.Module, parts: tuple[str, ...]) -> list[str]:
    """Full names of the modules LoRA adapts (see the module docstring)."""
    modules = dict(visual.named_modules())
    names = []
    for name, m in modules.items():
        owner = name.rpartition(".")[0]
        if isinstance(m, nn.MultiheadAttention):
            names += [name] if "attn" in parts else []
        elif (
            isinstance(m, nn.Linear)
            and owner.rpartition(".")[2] in parts
            and not isinstance(modules[owner], nn.MultiheadAttention)
        ):  # an MHA's out_proj goes with it
            names.append(name)
    return names


@dataclass(frozen=True)
class LoRAOptions:
    rank: int = 8  # r of each low-rank update
    alpha: float = 16.0  # scale alpha / r
    dropout: float = 0.0  # dropout on the LoRA branch's input
    targets: str = "attn"  # "attn", "attn+mlp" or "mlp"
    encoder_lr_scale: float = 1.0  # LoRA lr = scale * head lr

    CHOICES: ClassVar[dict] = {"targets": tuple(TARGETS)}
    RANGES: ClassVar[dict] = {"rank": (1, None), "alpha": (0.0, None), "dropout": (0.0, 1.0),
                              "encoder_lr_scale": (0.0, None)}  # fmt: skip


class LoRA(nn.Module):
    def __init__(self, backbone, num_attributes: int, options: LoRAOptions):
        super().__init__()
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as e:
            raise ParbenchError("method lora", "the peft library (pip install peft)", str(e)) from None
        visual = freeze(backbone.visual)
        targets = target_modules(visual, TARGETS[options.targets])
        if not targets:
            raise ParbenchError(
                f"lora on {backbone.name}",
                f"{options.targets} layers to adapt (attention modules, or "
                "Linear layers under modules named attn / mlp)",
                "none in this tower",
            )
        cfg = LoraConfig(
            r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout, target_modules=targets, bias="none"
        )
        self.visual = inject_adapter_in_model(cfg, visual)
        for name, p in self.visual.named_parameters():
            p.requires_grad_("lora_" in name)
        self.head = AttributeHead(backbone.embed_dim, num_attributes)
        self.num_attributes = num_attributes
        self.options = options

    def forward(self, images: torch.Tensor) -> dict:
        return {"logits": self.head(encode_image(self.visual, images).float())}

    def param_groups(self, cfg) -> list[dict]:
        lora = [p for n, p in self.visual.named_parameters() if p.requires_grad]
        return [
            {"name": "head", "params": list(self.head.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {
                "name": "lora",
                "params": lora,
                "lr": cfg.lr * self.options.encoder_lr_scale,
                "weight_decay": cfg.weight_decay,
            },
        ]


def build(backbone, card, options: LoRAOptions | None = None) -> LoRA:
    return LoRA(backbone, card.num_attributes, options or LoRAOptions())


SPEC = MethodSpec(
    name="lora",
    description="LoRA (peft) on the frozen image tower's attention (optionally MLP) + linear head",
    build=build,
    recipe=TOWER_TUNING,
    options=LoRAOptions,
    backbones=("open_clip", "timm"),
)
