"""PromptPAR built around open_clip's towers: the CLIP weights and modules are reused, never forked.

Forward: the frozen image tower runs with deep visual prompts and region part tokens (and the region mask);
all output tokens are projected by CLIP's `proj`; the frozen text tower encodes one sentence per attribute;
the fusion model reads [text ; visual] and its heads give per-attribute logits. With use_GL, a global-local
similarity aggregation gives an auxiliary output used only in the loss.

The attention is computed with fused scaled-dot-product attention (no weights materialised). Text features
are cached whenever nothing upstream of them trains: always in the reference variant (its text prompts
provably cannot reach the pooled token), in eval mode otherwise.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from parbench.api import block_forward, prompt_init
from promptpar.config import PromptParConfig
from promptpar.fusion import FusionModel
from promptpar.layout import make_layout


class SoftmaxWithTemperature(nn.Module):
    def __init__(self, initial: float = 1.0):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(initial))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / self.temperature, dim=-1)


class PromptPAR(nn.Module):
    def __init__(self, backbone, attributes: list[str], texts: list[str], cfg: PromptParConfig):
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        self.attributes = list(attributes)
        self.num_attributes = A = len(attributes)
        self.clip = backbone.model
        visual = self.clip.visual
        self.width = W = visual.conv1.out_channels
        grid = visual.grid_size[0]
        depth = len(visual.transformer.resblocks)
        self.vis_depth = min(cfg.vis_depth, depth)
        self.layout = make_layout(grid, cfg.vis_prompt, cfg.use_div, cfg.div_num, cfg.overlap_row, cfg.fix_geometry)
        if cfg.use_div != cfg.use_GL and not cfg.fix_geometry:
            # the reference's GL branch needs the part tokens and its use_div path needs the GL modules: each
            # crashes without the other (use_vismask alone is ignored there, as here)
            from parbench.api import ParbenchError

            raise ParbenchError(
                "promptpar variant=reference",
                "use_div together with use_GL (the reference couples them)",
                f"use_div={cfg.use_div}, use_GL={cfg.use_GL}",
            )
        # the reference allocates vis_depth rows even where the tower is shallower (ViT-B/16: 12 of 24 used);
        # fix_geometry allocates only the layers that exist
        rows = self.vis_depth if cfg.fix_geometry else cfg.vis_depth
        self.prompt_deep = nn.Parameter(prompt_init((rows, cfg.vis_prompt, 1, W), W, 14))  # (D, P, 1, W)
        if cfg.use_div:
            self.part_class_embedding = nn.Parameter(W**-0.5 * torch.randn(cfg.div_num, W))
        text_w = self.clip.token_embedding.weight.shape[1]
        text_layers = len(self.clip.transformer.resblocks)
        n_text = cfg.text_prompt if cfg.use_textprompt else 0
        self.prompt_text_deep = nn.Parameter(prompt_init((text_layers, n_text, A, text_w), text_w, 14))
        if cfg.use_GL:
            self.softmax_model = SoftmaxWithTemperature()
            self.agg_bn = nn.BatchNorm1d(A)
        out_dim = visual.output_dim
        self.fusion = FusionModel(
            out_dim,
            A,
            self.layout.length,
            cfg.fusion_dim,
            cfg.fusion_heads,
            cfg.mm_layers,
            cfg.use_mm_former,
            cfg.fusion_drop_path,
        )
        self.register_buffer(
            "tokens",
            backbone.tokenizer(texts) if backbone.tokenizer else torch.zeros(A, 77, dtype=torch.long),
            persistent=False,
        )
        self.register_buffer(
            "vis_mask", self.layout.mask() if cfg.use_div and cfg.use_vismask else None, persistent=False
        )
        self._text_cache: torch.Tensor | None = None
        self.grad_checkpointing = False
        self.ddp_find_unused = True  # e.g. the reference's text prompts train but never get a gradient
        # the reference normalises with mean = std = 0.5 and resizes bilinearly (torchvision's default)
        self.preprocess_defaults = {
            "normalization": None if cfg.fix_normalization else "half",
            "interpolation": None if cfg.fix_normalization else "bilinear",
        }
        self.set_trainable()

    # ---- which parameters train -------------------------------------------------------------------------
    PROMPT_SIDE = ("prompt_deep", "prompt_text_deep", "part_class_embedding", "agg_bn", "softmax_model")
    FUSION_SIDE = ("word_embed", "visual_embed", "weight_layer", "bn", "norm")

    def set_trainable(self) -> None:
        """The reference's rule: prompt-side tensors, and fusion parameters whose name contains word_embed,
        visual_embed, weight_layer, bn or norm (so the ViT-B block's LayerNorms train); fix_frozen_norms
        freezes those block norms. tune="full" makes everything trainable."""
        for name, p in self.named_parameters():
            if self.cfg.tune == "full":
                p.requires_grad_(True)
            elif name.startswith("fusion."):
                sub = name[len("fusion.") :]
                train = any(k in sub for k in self.FUSION_SIDE)
                if self.cfg.fix_frozen_norms and (sub.startswith("blocks.") or sub.startswith("norm.")):
                    train = False
                if self.cfg.fix_dead_bias and sub.startswith("weight_layer.") and sub.endswith(".bias"):
                    train = False
                p.requires_grad_(train)
            else:
                p.requires_grad_(name.split(".")[0] in self.PROMPT_SIDE)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the image tower's block activations in backward instead of storing them: the tower is
        frozen but prompts enter every layer, so its activations are otherwise all kept for the backward."""
        self.grad_checkpointing = enable

    def param_groups(self, cfg) -> list[dict]:
        prompt = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("fusion.")]
        fusion = [p for n, p in self.named_parameters() if p.requires_grad and n.startswith("fusion.")]
        return [
            {
                "name": "fusion",
                "params": fusion,
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "warmup_epochs": cfg.warmup_epochs,
            },
            {
                "name": "prompt",
                "params": prompt,
                "lr": self.cfg.clip_lr,
                "weight_decay": self.cfg.clip_weight_decay,
                "warmup_epochs": self.cfg.clip_warmup_epochs,
            },
        ]

    # ---- towers -----------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All output tokens projected (B, L, C) and the GL class tokens (B, 1 + div_num, C) or None."""
        v, lay, cfg = self.clip.visual, self.layout, self.cfg
        x = v.conv1(images.to(v.conv1.weight.dtype))  # (B, W, G, G)
        x = x.flatten(2).transpose(1, 2)  # (B, G*G, W)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1+G*G, W)
        if cfg.use_div:  # part tokens after CLS, without positional embedding
            parts = self.part_class_embedding.to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], parts, x[:, 1:]], dim=1)
        x = v.ln_pre(x)
        pos = torch.tensor(lay.prompt_positions(), device=x.device)
        order = torch.tensor(lay.source_order() if cfg.use_div else self._plain_order(x.shape[1]), device=x.device)
        is_prompt = torch.zeros(lay.length, dtype=torch.bool, device=x.device)
        is_prompt[pos] = True
        for layer, blk in enumerate(v.transformer.resblocks):
            if layer < self.vis_depth:
                prompts = self.prompt_deep[layer, :, 0].to(x.dtype)  # (P, W)
                if layer == 0:
                    src = torch.cat([x, prompts.expand(x.shape[0], -1, -1)], dim=1)
                    x = src[:, order]  # (B, L, W) in layout order
                else:
                    full = torch.zeros(lay.length, x.shape[-1], dtype=x.dtype, device=x.device).index_copy(
                        0, pos, prompts
                    )
                    x = torch.where(is_prompt[None, :, None], full, x)  # replace, VPT-deep
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block_forward, blk, x, self.vis_mask, use_reentrant=False)
            else:
                x = block_forward(blk, x, self.vis_mask)
        if cfg.fix_ln_post:
            x = v.ln_post(x)
        x = x @ v.proj  # (B, L, C)
        all_class = None
        if cfg.use_div:
            first = 0 if cfg.fix_global_token else 1
            idx = [first] + [lay.part_index(k) for k in range(1, cfg.div_num + 1)]
            all_class = x[:, idx]  # (B, 1+d, C)
        return x, all_class

    def _plain_order(self, n_tokens: int) -> list[int]:
        """Without use_div: [CLS, prompts, patches] from [CLS, patches, prompts]."""
        P = self.cfg.vis_prompt
        return [0] + list(range(n_tokens, n_tokens + P)) + list(range(1, n_tokens))

    def encode_text(self) -> torch.Tensor:
        """(A, C) text features of the attribute sentences.

        The tower runs only up to the longest sentence's end-of-text token (plus the prompts in front of it):
        attention is causal and the features are pooled at EOT, so later positions cannot change them (the
        tests check this against the full 77 positions). PETA's sentences end by position 12 of 77."""
        c, cfg = self.clip, self.cfg
        tokens = self.tokens
        ctx = tokens.shape[1]
        eot = tokens.argmax(dim=-1)  # EOT has the highest token id
        n = self.prompt_text_deep.shape[1] if cfg.fix_text_prompts else 0
        # the sequence length the pooled tokens can see (all of it on the meta device, which has no values)
        total = ctx if tokens.is_meta else min(ctx, int(eot.max()) + 1 + n)
        L0 = total - n  # token positions kept before the prompts go in
        x = c.token_embedding(tokens[:, :L0]) + c.positional_embedding[:L0]  # (A, L0, Wt)
        causal = torch.ones(total, total, dtype=torch.bool, device=x.device).tril()
        for layer, blk in enumerate(c.transformer.resblocks):
            if n:  # fixed: prompts right after SOT, so EOT (shifted by n) attends to them
                p = self.prompt_text_deep[layer].transpose(0, 1).to(x.dtype)  # (A, n, Wt)
                x = torch.cat([x[:, :1], p, x[:, 1 if layer == 0 else 1 + n :]], dim=1)  # (A, total, Wt)
            # reference: prompts appended at 77..79 under the causal mask cannot reach EOT (< 77): skipped,
            # which leaves every output bit-identical while saving their compute
            x = block_forward(blk, x, causal)
        x = c.ln_final(x)
        return x[torch.arange(x.shape[0]), (eot + n).clamp(max=total - 1)] @ c.text_projection  # (A, C)

    def text_features(self) -> torch.Tensor:
        text_trains = (
            self.prompt_text_deep.requires_grad and self.cfg.fix_text_prompts and self.prompt_text_deep.numel()
        )
        text_trains = text_trains or any(p.requires_grad for p in self.clip.transformer.parameters())
        if self.training and text_trains:
            self._text_cache = None
            return self.encode_text()
        if self._text_cache is None or self._text_cache.device != self.tokens.device:
            with torch.no_grad():
                self._text_cache = self.encode_text()
        return self._text_cache

    def load_state_dict(self, *args, **kwargs):
        self._text_cache = None  # new weights, new text features
        return super().load_state_dict(*args, **kwargs)

    def train(self, mode: bool = True):
        self._text_cache = None  # weights may change between modes
        return super().train(mode)

    # ---- global-local aggregation ------------------------------------------------------------------------
    def aggregate(self, all_class: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        c = F.normalize(all_class.float(), dim=-1)  # (B, 1+d, C)
        t = F.normalize(text.float(), dim=-1)  # (A, C)
        sim = self.softmax_model(self.clip.logit_scale.exp() * c @ t.t())  # (B, 1+d, A), softmax over attributes
        glob, local = sim[:, 0], sim[:, 1:]
        mx, mn = local.max(dim=1).values, local.min(dim=1).values  # (B, A)
        gamma = (mx > self.cfg.ag_threshold).float()
        loc = gamma * mx + (1 - gamma) * mn
        if not self.cfg.fix_gl_per_sample:
            loc = loc[-1:].expand_as(loc)  # reference: the loop keeps the last sample's value for the batch
        return self.agg_bn((loc + glob) / 2)

    def forward(self, images: torch.Tensor) -> dict:
        visual, all_class = self.encode_image(images)
        text = self.text_features()
        logits = self.fusion(text.float(), visual.float())
        out = {"logits": logits}
        if self.cfg.use_GL and all_class is not None and self.training:
            out["aux"] = [self.aggregate(all_class, text)]
        return out
