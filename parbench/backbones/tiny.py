"""Weights for the tiny backbone: `--pretrained synthetic` for `parbench-tiny`.

A random-weight tiny ViT gives features that carry almost nothing (a linear probe on them stays near chance),
so the demo would only show that code runs. Real CLIP weights cannot be shipped or downloaded here, so this
module makes a stand-in the same way CLIP was made, at toy scale: image-text contrastive training (InfoNCE
over image/caption pairs), plus a per-attribute sentence-pair loss, on a synthetic set drawn with its own seed
and so disjoint from the `synthetic` / `synthetic-zs` evaluation images. Captions use phrasings of our own
(never the cards' sentences), so zero-shot prompts from a card are unseen text, as with real CLIP.

The result is an ordinary open_clip state dict written (atomically) into parbench's cache and loaded through
the same file path as any user checkpoint. It is deterministic for a given spec on CPU.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from parbench.data.synthetic import ATTRIBUTES, SyntheticSpec, generate
from parbench.settings import cache_dir

# Our own phrasings (positive, negative) per synthetic attribute; the cards' sentences are not used here.
PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "hat": (("has a hat on", "wears a cap"), ("bareheaded", "has no hat")),
    "long_hair": (("has long hair", "hair down to the shoulders"), ("has short hair", "hair cut short")),
    "glasses": (("wears glasses", "has spectacles on"), ("no glasses", "no spectacles")),
    "long_sleeves": (("long sleeves", "a long-sleeved top"), ("short sleeves", "a short-sleeved top")),
    "dark_upper": (("a dark top", "dark upper clothes"), ("a light top", "light upper clothes")),
    "skirt": (("wears a skirt", "in a skirt"), ("no skirt", "not in a skirt")),
    "shorts": (("wears shorts", "in shorts"), ("no shorts", "long legwear")),
    "dark_lower": (("dark trousers", "dark lower clothes"), ("light trousers", "light lower clothes")),
    "backpack": (("carries a backpack", "has a rucksack"), ("no backpack", "no rucksack")),
    "handbag": (("carries a handbag", "holds a bag in hand"), ("no handbag", "empty hands")),
    "male": (("a man", "a male person"), ("a woman", "a female person")),
    "elderly": (("an old person", "an elderly person"), ("a young person", "a younger person")),
}
VERSION = 2  # 2: resize once, multi-tensor AdamW (float order differs from 1)


@dataclass(frozen=True)
class TinyPretrainSpec:
    """What decides the weights; part of the file name, so a change makes a new file."""

    identities: int = 400  # disjoint from the evaluation sets: another seed draws other people
    images_per_identity: int = 4
    data_seed: int = 1000
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    phrases_per_caption: int = 3
    clip_weight: float = 0.25  # InfoNCE weight next to the sentence-pair loss (which learns attributes faster)
    head_weight: float = 1.0  # a linear attribute head on the image embedding (discarded): shapes the image
    # features as fast as supervised pretraining does, which the text-side losses alone are slow to
    seed: int = 0

    def key(self) -> str:
        return (
            f"v{VERSION}-id{self.identities}x{self.images_per_identity}-d{self.data_seed}-e{self.epochs}"
            f"-b{self.batch_size}-lr{self.lr:g}-c{self.clip_weight:g}-h{self.head_weight:g}-s{self.seed}"
        )


def weights_path(spec: TinyPretrainSpec = TinyPretrainSpec()) -> Path:
    return cache_dir() / "weights" / f"parbench-tiny-synthetic-{spec.key()}.pt"


def _captions(labels: np.ndarray, k: int, rng: np.random.Generator) -> list[str]:
    """One caption per image: k randomly chosen attributes, each said positively or negatively as labelled."""
    out = []
    for row in labels:
        picks = rng.choice(len(ATTRIBUTES), size=k, replace=False)
        parts = [PHRASES[ATTRIBUTES[j]][0 if row[j] else 1][int(rng.integers(2))] for j in picks]
        out.append("a pedestrian: " + ", ".join(parts))
    return out


def _load_images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    doc = json.loads((root / "annotation.json").read_text())
    imgs = np.stack([np.asarray(Image.open(root / r["file"]).convert("RGB")) for r in doc["images"]])
    labels = np.asarray([r["labels"] for r in doc["images"]], dtype=np.uint8)
    return imgs, labels  # (N, H, W, 3) uint8, (N, A)


def encode_text_short(model, tokens):
    """open_clip's encode_text on tokens cut after the longest sentence's EOT. Attention is causal, so the EOT
    features are the same as with all 77 positions (up to float rounding), at a fraction of the cost."""
    import torch

    from parbench.layers import block_forward

    eot = tokens.argmax(dim=-1)
    L = int(eot.max()) + 1
    x = model.token_embedding(tokens[:, :L]) + model.positional_embedding[:L]
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    for blk in model.transformer.resblocks:
        x = block_forward(blk, x, causal)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection


def pretrain(spec: TinyPretrainSpec = TinyPretrainSpec(), log=None, progress=None) -> dict:
    """Train parbench-tiny from scratch; returns {"state_dict", "history"}. Deterministic on CPU.
    `progress`: a rich Progress to show steps, losses and the time left."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from parbench.backbones.base import OPENAI_MEAN, OPENAI_STD, TINY, quiet_open_clip, register_configs

    register_configs()
    root = generate(
        cache_dir() / "synthetic-pretrain",
        SyntheticSpec(identities=spec.identities, images_per_identity=spec.images_per_identity, seed=spec.data_seed),
    )
    imgs, labels = _load_images(root)
    # resized once (bilinear is mirror-symmetric, so flipping after resizing equals resizing after flipping)
    resized = torch.cat(
        [
            F.interpolate(
                torch.from_numpy(imgs[i : i + 256]).permute(0, 3, 1, 2).float() / 255.0,
                size=(224, 224),
                mode="bilinear",
                align_corners=False,
            )
            for i in range(0, len(imgs), 256)
        ]
    )  # (N, 3, 224, 224)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    with quiet_open_clip():  # random init is the point here: no notice about missing weights
        model = open_clip.create_model(TINY, pretrained=None)
    tokenizer = open_clip.get_tokenizer(TINY)
    model.train()
    head = torch.nn.Linear(model.text_projection.shape[1], len(ATTRIBUTES))
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)  # one kernel per step
    steps_per_epoch = len(imgs) // spec.batch_size
    total = steps_per_epoch * spec.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=total, pct_start=0.1)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    pos_tok = tokenizer([f"a pedestrian: {PHRASES[a][0][0]}" for a in ATTRIBUTES])
    neg_tok = tokenizer([f"a pedestrian: {PHRASES[a][1][0]}" for a in ATTRIBUTES])
    A = len(ATTRIBUTES)
    history = []
    task = progress.add_task("tiny pretraining", total=total) if progress else None
    for epoch in range(spec.epochs):
        order = rng.permutation(len(imgs))
        sums = np.zeros(3)
        for s in range(steps_per_epoch):
            idx = order[s * spec.batch_size : (s + 1) * spec.batch_size]
            x = resized[torch.from_numpy(idx)]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = (x - mean) / std
            y = torch.from_numpy(labels[idx]).float()
            tokens = tokenizer(_captions(labels[idx], spec.phrases_per_caption, rng))
            emb = model.encode_image(x)
            f = F.normalize(emb, dim=-1)
            t = F.normalize(encode_text_short(model, torch.cat([tokens, pos_tok, neg_tok])), dim=-1)
            cap, tp, tn = t[: len(idx)], t[len(idx) : len(idx) + A], t[len(idx) + A :]
            scale = model.logit_scale.exp()
            logits = scale * f @ cap.t()
            target = torch.arange(len(idx))
            clip_loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            pair = scale * ((f @ tp.t()) - (f @ tn.t()))  # (B, A): the zero-shot decision rule
            pair_loss = F.binary_cross_entropy_with_logits(pair, y)
            head_loss = F.binary_cross_entropy_with_logits(head(emb), y)
            loss = spec.clip_weight * clip_loss + pair_loss + spec.head_weight * head_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)
            sums += [clip_loss.item(), pair_loss.item(), ((pair > 0).float() == y).float().mean().item()]
            if progress:
                progress.update(
                    task,
                    advance=1,
                    description=f"tiny pretraining, epoch {epoch + 1}/{spec.epochs}, "
                    f"pair accuracy {sums[2] / (s + 1):.3f}",
                )
        row = dict(zip(("clip_loss", "pair_loss", "pair_acc"), (sums / steps_per_epoch).tolist(), strict=True))
        history.append({"epoch": epoch, **row})
        if log and not progress:
            log(
                f"tiny pretraining epoch {epoch + 1}/{spec.epochs}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in row.items())
            )
    return {"state_dict": model.state_dict(), "history": history}


def ensure_weights(spec: TinyPretrainSpec = TinyPretrainSpec(), log=None) -> Path:
    """The cached weights file for `spec`, pretraining first if it is not there yet."""
    from parbench.atomic import save_torch

    path = weights_path(spec)
    if path.is_file():
        return path
    if log:
        log(f"pretraining parbench-tiny on disjoint synthetic data (once; cached at {path})")
    import torch

    from parbench.progress import progress_bar

    bar = progress_bar(log is None, unit="step")
    # its own RNG: a run that first creates the weights draws the same numbers afterwards as one that finds them
    with torch.random.fork_rng(devices=[]), bar or contextlib.nullcontext():
        out = pretrain(spec, log=log, progress=bar)
    meta = {"spec": asdict(spec), "history": out["history"]}
    save_torch({"state_dict": out["state_dict"], "parbench": meta}, path)
    return path
