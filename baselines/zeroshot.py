"""Zero-shot CLIP: nothing trains; each attribute is decided from the image's similarity with text.

Two heads, by what the model was trained with:
- `pair` (softmax CLIP): a softmax over the similarities with the attribute's positive and negative sentences
  (at CLIP's logit scale); softmax([s_pos, s_neg])[0] = sigmoid(s_pos - s_neg), so the logit is s_pos - s_neg;
- `sigmoid` (SigLIP-style models, which carry a `logit_bias`): the model's own calibrated probability that the
  positive sentence matches, sigmoid(scale * cos + bias), with its own scale and bias.
`auto` picks by the model. Image features are cached like a linear probe's (the same file), so comparing prompt
sets costs only their text encoding; the text bank is cached per (weights, sentences).

Prompt sets are data: `datasets/prompts/<card>.toml` (or any file, `--set prompt_file=...`) names sets of
templates, optionally with per-attribute sentences; `card` is always the card's own sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from parbench.api import MethodSpec, ParbenchError, freeze, prompt_identity, sentences


@dataclass(frozen=True)
class ZeroShotOptions:
    prompt_set: str = "card"  # a set from the prompt file; "card" = the card's own sentences
    prompt_file: str = ""  # a prompts TOML; "" = datasets/prompts/<card>.toml when it exists
    head: str = "auto"  # "auto", "pair" (softmax CLIP) or "sigmoid" (SigLIP-style, its own bias)

    CHOICES: ClassVar[dict] = {"head": ("auto", "pair", "sigmoid")}


@torch.no_grad()
def text_bank(clip_model, tokenizer, pos: list[list[str]], neg: list[list[str]], device="cpu") -> torch.Tensor:
    """(K, 2, D) normalised text embeddings of positive and negative sentences, each an ensemble mean."""
    out = []
    for side in (pos, neg):
        feats = []
        for group in side:
            e = F.normalize(clip_model.encode_text(tokenizer(group).to(device)).float(), dim=-1)
            feats.append(F.normalize(e.mean(0), dim=-1))
        out.append(torch.stack(feats))
    return torch.stack(out, dim=1)


def cached_text_bank(backbone, card, options: ZeroShotOptions = ZeroShotOptions()) -> torch.Tensor:
    """text_bank, computed once per (weights, sentences) and kept on disk: a ViT-L text tower over every
    sentence costs seconds per run otherwise. Random weights are keyed by the seed that drew them."""
    import hashlib
    import json

    from parbench.api import cache_dir, save_torch

    pos, neg = sentences(card, options)
    key = json.dumps([backbone.describe(), pos, neg], sort_keys=True, default=str)  # weights by content, seed
    path = cache_dir() / "text" / f"{card.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        try:  # weights-only: a cache file never runs code; a corrupt one is recomputed
            bank = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            bank = None
        if isinstance(bank, torch.Tensor) and bank.shape == (card.num_attributes, 2, backbone.embed_dim):
            return bank
    bank = text_bank(backbone.model, backbone.tokenizer, pos, neg)
    save_torch(bank, path)
    return bank


class TextHead(nn.Module):
    """Image features -> per-attribute logits against the text bank."""

    def __init__(self, bank: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor | None, head: str):
        super().__init__()
        self.register_buffer("bank", bank)  # (K, 2, D)
        self.register_buffer("scale", logit_scale.detach().exp().float())
        self.register_buffer("bias", logit_bias.detach().float() if logit_bias is not None else None)
        self.kind = head

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        f = F.normalize(feats.float(), dim=-1)  # (B, D)
        sims = self.scale * torch.einsum("bd,ksd->bks", f, self.bank)  # (B, K, 2)
        if self.kind == "sigmoid":
            return sims[..., 0] + self.bias
        return sims[..., 0] - sims[..., 1]


class ZeroShot(nn.Module):
    def __init__(self, backbone, card, options: ZeroShotOptions):
        super().__init__()
        clip = backbone.model
        self.clip = freeze(clip)  # both towers: the text tower builds the bank, so it is counted
        self.num_attributes = card.num_attributes
        bias = getattr(clip, "logit_bias", None)
        head = options.head if options.head != "auto" else ("sigmoid" if bias is not None else "pair")
        if head == "sigmoid" and bias is None:
            raise ParbenchError(f"zero-shot on {backbone.name}", "a model with a logit_bias for head=sigmoid", "none")
        if clip.logit_scale.is_meta:  # counting parameters on the meta device: no text to encode
            bank = torch.empty(card.num_attributes, 2, backbone.embed_dim, device="meta")
        else:
            bank = cached_text_bank(backbone, card, options)
        self.head = TextHead(bank, clip.logit_scale, bias, head)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The same features a linear probe of this tower caches (pooled, projected, not normalised); frozen, and
        differentiable in the images (attacks need that), callers that only read run it under no_grad."""
        return self.clip.visual(images).float()

    def forward(self, images: torch.Tensor) -> dict:
        return {"logits": self.head(self.encode(images))}


def build(backbone, card, options: ZeroShotOptions | None = None) -> ZeroShot:
    return ZeroShot(backbone, card, options or ZeroShotOptions())


SPEC = MethodSpec(
    name="zeroshot",
    description="zero-shot CLIP: positive vs negative sentence per attribute (or a SigLIP model's own head)",
    build=build,
    recipe={"epochs": 0},
    options=ZeroShotOptions,
    uses_features=True,
    trains=False,
    fits_thresholds=True,
    identity_data=prompt_identity,
    open_vocabulary={},  # nothing trains: every attribute is decided from its own sentences
)
