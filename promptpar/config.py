"""Every flag of the reference's config table, with the reference defaults, plus our named fixes.

`variant` picks a preset for the fixes: "reference" turns every fix off (quirks reproduced, so released
checkpoints load and match), "fixed" (the default) turns every fix on. Each `fix_*` can still be set on its
own (`--set fix_ln_post=false`) so a report can show an ablation. A fix left as None follows the variant.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

FIXES = (
    "fix_text_prompts",  # prompts after SOT reach the pooled EOT token (reference: appended after 77 tokens, dead)
    "fix_gl_per_sample",  # GL local term per sample (reference: the last sample's, broadcast to the batch)
    "fix_global_token",  # CLS is the GL global token (reference: the first global prompt, index 1)
    "fix_ln_post",  # CLIP's ln_post before proj (reference: never applied)
    "fix_frozen_norms",  # the fusion block's LayerNorms frozen like the rest of it (reference: they train)
    "fix_normalization",  # CLIP's own mean/std and resize (reference: 0.5/0.5, bilinear)
    "fix_geometry",  # regions, prompt groups and mask computed for any grid / div_num / overlap_row
    "fix_dead_bias",  # head biases feed BatchNorm, which removes any constant shift: frozen, not counted
)


@dataclass(frozen=True)
class PromptParConfig:
    variant: str = "fixed"  # "fixed" or "reference"
    use_textprompt: bool = True  # deep text prompts (official command: on)
    use_div: bool = True  # region part tokens and prompt groups
    use_vismask: bool = True  # region attention mask (needs use_div)
    use_GL: bool = True  # global-local aggregation auxiliary loss (needs use_div)
    use_mm_former: bool = True  # ViT-B fusion block (else a Linear along the token axis)
    mm_layers: int = 1  # number of final ViT-B blocks used for fusion
    div_num: int = 4  # number of regions
    overlap_row: int = 2  # patch rows shared by neighbouring regions
    text_prompt: int = 3  # text prompt tokens per layer (per attribute)
    vis_prompt: int = 50  # visual prompt tokens per layer (divisible by div_num + 1 under use_div)
    vis_depth: int = 24  # layers that receive fresh visual prompts (capped at the tower depth)
    ag_threshold: float = 0.5  # GL gamma threshold
    clip_lr: float = 4e-3  # lr of the prompt-side parameters (the fusion/head lr is the recipe's lr)
    clip_weight_decay: float = 1e-4
    clip_warmup_epochs: int = 10  # warm-up of the prompt-side group (fusion/head: the recipe's warmup_epochs)
    tune: str = "prompt"  # "prompt" (the method) or "full" (every parameter trains: fine-tuning comparison)
    vit_b_weights: str = ""  # timm ViT-B/16 checkpoint (jx_vit_base_p16_224-80ecf9dd.pth) for the fusion block
    fusion_init: str = "weights"  # "weights" (require vit_b_weights unless the backbone is random) or "random"
    fusion_dim: int = 768  # ViT-B/16 width
    fusion_heads: int = 12
    fusion_drop_path: float = 0.1  # DropPath of the reference's ViT-B (drop_path_rate 0.1, last block)
    fix_text_prompts: bool | None = None
    fix_gl_per_sample: bool | None = None
    fix_global_token: bool | None = None
    fix_ln_post: bool | None = None
    fix_frozen_norms: bool | None = None
    fix_normalization: bool | None = None
    fix_geometry: bool | None = None
    fix_dead_bias: bool | None = None

    CHOICES: ClassVar[dict] = {
        "variant": ("fixed", "reference"),
        "tune": ("prompt", "full"),
        "fusion_init": ("weights", "random"),
    }
    RANGES: ClassVar[dict] = {"mm_layers": (1, None), "div_num": (1, None), "overlap_row": (0, None), "text_prompt": (0, None),
              "vis_prompt": (0, None), "vis_depth": (0, None), "ag_threshold": (0.0, 1.0), "clip_lr": (0.0, None),
              "clip_weight_decay": (0.0, None), "clip_warmup_epochs": (0, None), "fusion_dim": (1, None),
              "fusion_heads": (1, None), "fusion_drop_path": (0.0, 1.0)}  # fmt: skip

    def resolved(self) -> PromptParConfig:
        """Fill each unset fix from the variant."""
        if self.variant not in ("fixed", "reference"):
            from parbench.api import ParbenchError

            raise ParbenchError("promptpar variant", "'fixed' or 'reference'", repr(self.variant))
        on = self.variant == "fixed"
        return replace(self, **{f: on for f in FIXES if getattr(self, f) is None})

    def fixes(self) -> dict[str, bool]:
        r = self.resolved()
        return {f: bool(getattr(r, f)) for f in FIXES}


def field_names() -> list[str]:
    return [f.name for f in fields(PromptParConfig)]
