"""Zero-shot CLIP: for each attribute, a softmax over the similarities of the image with the card's positive
and negative sentences (at CLIP's logit scale) gives the probability. Nothing trains.

softmax([s_pos, s_neg])[0] = sigmoid(s_pos - s_neg), so the model returns s_pos - s_neg as its logits and the
engine's sigmoid gives exactly the pair softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from parbench.engine.params import freeze
from parbench.methods import MethodSpec


@dataclass(frozen=True)
class ZeroShotOptions:
    templates: tuple[str, ...] = (
        "{}",
    )  # sentence ensemble: each template wraps each sentence, then averaged


@torch.no_grad()
def text_bank(clip_model, tokenizer, card, templates=("{}",), device="cpu") -> torch.Tensor:
    """(K, 2, D) normalised text embeddings of positive and negative sentences, template-averaged."""
    out = []
    for side in ("positive", "negative"):
        sentences = [getattr(a, side) for a in card.attributes]
        feats = []
        for t in templates:
            tokens = tokenizer([t.format(s) for s in sentences]).to(device)
            feats.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
        out.append(F.normalize(torch.stack(feats).mean(0), dim=-1))
    return torch.stack(out, dim=1)


def cached_text_bank(backbone, card, templates=("{}",)) -> torch.Tensor:
    """text_bank, computed once per (weights, card, templates) and kept on disk: a ViT-L text tower over every
    sentence costs seconds per run otherwise. Random weights are keyed by the seed that drew them."""
    import hashlib
    import json

    from parbench.atomic import save_torch
    from parbench.settings import cache_dir

    key = json.dumps(
        [backbone.describe(), card.name, card.sha256, list(templates)], sort_keys=True, default=str
    )  # describe(): weights by content, random weights by their seed, the activation
    path = cache_dir() / "text" / f"{card.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        try:  # weights-only: a cache file never runs code; a corrupt one is recomputed
            bank = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            bank = None
        if isinstance(bank, torch.Tensor) and bank.shape == (card.num_attributes, 2, backbone.embed_dim):
            return bank
    bank = text_bank(backbone.model, backbone.tokenizer, card, templates)
    save_torch(bank, path)
    return bank


class ZeroShot(nn.Module):
    def __init__(self, backbone, card, options: ZeroShotOptions):
        super().__init__()
        self.clip = freeze(backbone.model)
        self.num_attributes = card.num_attributes
        if backbone.model.logit_scale.is_meta:  # counting parameters on the meta device: no text to encode
            bank = torch.empty(card.num_attributes, 2, backbone.embed_dim, device="meta")
        else:
            bank = cached_text_bank(backbone, card, options.templates)
        self.register_buffer("bank", bank)

    def forward(self, images: torch.Tensor) -> dict:
        f = F.normalize(self.clip.encode_image(images).float(), dim=-1)  # (B, D)
        sims = self.clip.logit_scale.exp().float() * torch.einsum("bd,ksd->bks", f, self.bank)  # (B, K, 2)
        return {"logits": sims[..., 0] - sims[..., 1]}


def build(backbone, card, options: ZeroShotOptions | None = None) -> ZeroShot:
    return ZeroShot(backbone, card, options or ZeroShotOptions())


SPEC = MethodSpec(
    name="zeroshot",
    description="zero-shot CLIP: positive vs negative sentence per attribute, no training",
    build=build,
    recipe={"epochs": 0},
    options=ZeroShotOptions,
    trains=False,
)
