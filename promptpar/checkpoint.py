"""The reference's checkpoint layout, both ways, with an explicit key map.

A reference checkpoint (Event-AHU/OpenPAR, PromptPAR/train.py) is a dict with
  `model_state_dict`  the fusion/head model: word_embed, visual_embed (released files: vis_embed), blocks.i,
                      norm, weight_layer.i, bn (or linear_layer without the MM-former);
  `clip_model`        the whole modified CLIP (older files: `ViT_model`), fp16, holding the prompt tensors too:
                      visual.transformer.prompt_deep, transformer.prompt_text_deep, visual.part_class_embedding,
                      agg_bn, softmax_model.temperature;
  `epoch`, `optimizer`, `result` (an EasyDict of metrics): ignored.
Its attribute axis is in the order of the reference's own pickles, which is the raw file order for PA100k and
RAPv1 (the card's `raw_order`); every tensor with an attribute axis is permuted by attribute name, never by
position. Import is strict: every tensor our model has must come from the file with the right shape, and every
tensor in the file must have a place, or nothing is loaded and the error lists the names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from parbench.api import ParbenchError

# reference clip_model key -> our key, for the prompt-side tensors that live inside the reference's CLIP
_PROMPT_KEYS = {
    "visual.transformer.prompt_deep": "prompt_deep",
    "transformer.prompt_text_deep": "prompt_text_deep",
    "visual.part_class_embedding": "part_class_embedding",
    "softmax_model.temperature": "softmax_model.temperature",
}
_JIT_LEFTOVERS = {"input_resolution", "context_length", "vocab_size"}
_CLIP_KEYS = ("clip_model", "ViT_model")


def reference_order(card) -> list[str]:
    """Attribute names in the order the reference code used for this dataset."""
    return list(card.raw_order) if card.raw_order else list(card.attribute_names)


def _perm(card) -> list[int]:
    """perm[j] = position in the reference order of our (card-order) attribute j."""
    ref = reference_order(card)
    if sorted(ref) != sorted(card.attribute_names):
        raise ParbenchError(f"card {card.name}", "raw_order naming the evaluated attributes", str(ref[:4]))
    pos = {n: i for i, n in enumerate(ref)}
    return [pos[n] for n in card.attribute_names]


def _axis(our_key: str, tensor: torch.Tensor) -> int | None:
    """Which axis of this tensor runs over attributes (None: no attribute axis)."""
    if our_key == "prompt_text_deep":
        return 2
    if our_key.startswith(("fusion.bn.", "agg_bn.")) and tensor.dim() == 1:
        return 0
    if our_key == "fusion.linear_layer.bias":
        return 0
    return None


def _reorder(our: dict[str, torch.Tensor], perm: list[int], to_ours: bool) -> dict[str, torch.Tensor]:
    """Apply (to_ours) or undo the attribute permutation on every tensor with an attribute axis."""
    A = len(perm)
    idx = torch.tensor(perm) if to_ours else torch.argsort(torch.tensor(perm))
    out = {}
    for k, t in our.items():
        ax = _axis(k, t)
        if ax is not None and t.shape[ax] == A:
            t = t.index_select(ax, idx)
        if k == "fusion.linear_layer.weight":  # (A, A + L): output rows and the text-token input columns
            t = t.index_select(0, idx)
            t = torch.cat([t[:, :A].index_select(1, idx), t[:, A:]], dim=1)
        out[k] = t
    # per-attribute head modules: weight_layer.<j>
    heads = {k: v for k, v in out.items() if k.startswith("fusion.weight_layer.")}
    for k in heads:
        del out[k]
    for k in heads:
        j = int(k.split(".")[2])
        src = int(idx[j])  # ours j <- reference perm[j] (import); reference r <- ours argsort[r] (export)
        tail = k.split(".", 3)[3]
        out[f"fusion.weight_layer.{j}.{tail}"] = heads[f"fusion.weight_layer.{src}.{tail}"]
    return out


def to_ours(ckpt: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map a reference checkpoint's keys to ours (no reordering yet)."""
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ParbenchError(source, "a PromptPAR checkpoint with 'model_state_dict' and 'clip_model'", str(found))
    clip_key = next((k for k in _CLIP_KEYS if k in ckpt), None)
    if clip_key is None:
        raise ParbenchError(source, "a 'clip_model' (or older 'ViT_model') entry", f"keys {sorted(ckpt)}")
    out: dict[str, torch.Tensor] = {}
    for k, v in ckpt["model_state_dict"].items():
        k = k[7:] if k.startswith("module.") else k
        if k.startswith("vis_embed."):  # the released files' name for visual_embed
            k = "visual_embed." + k[len("vis_embed.") :]
        out["fusion." + k] = v
    for k, v in ckpt[clip_key].items():
        if k in _JIT_LEFTOVERS:
            continue
        if k in _PROMPT_KEYS:
            out[_PROMPT_KEYS[k]] = v
        elif k.startswith(("agg_bn.", "softmax_model.")):
            out[k] = v
        else:
            out["clip." + k] = v
    return out


def import_reference(model, card, ckpt: dict, source: str = "checkpoint") -> None:
    """Load a reference checkpoint into a `variant=reference` PromptPAR model, strictly."""
    if model.cfg.variant != "reference":
        raise ParbenchError(source, "a model built with --set variant=reference", f"variant={model.cfg.variant}")
    theirs = _reorder(to_ours(ckpt, source), _perm(card), to_ours=True)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in theirs)
    unexpected = sorted(k for k in theirs if k not in own)
    shapes = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(theirs[k].shape)}"
        for k in own
        if k in theirs and own[k].shape != theirs[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:12])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:12])}")
        if shapes:
            parts.append(f"wrong shape {len(shapes)}: {'; '.join(shapes[:6])}")
        raise ParbenchError(
            source, f"every tensor of PromptPAR ({card.name}, {model.num_attributes} attributes)", " | ".join(parts)
        )
    model.load_state_dict({k: theirs[k].to(own[k].dtype) for k in own}, strict=True)


def export_reference(
    model, card, vis_key: str = "visual_embed", clip_key: str = "clip_model", result: Any = None
) -> dict:
    """Our model's weights in the reference's layout and attribute order (what its train.py saves)."""
    ours = _reorder({k: v.detach().cpu() for k, v in model.state_dict().items()}, _perm(card), to_ours=False)
    inverse = {v: k for k, v in _PROMPT_KEYS.items()}
    fusion, clip = {}, {}
    for k, v in ours.items():
        if k.startswith("fusion."):
            k = k[len("fusion.") :]
            if k.startswith("visual_embed.") and vis_key != "visual_embed":
                k = vis_key + k[len("visual_embed") :]
            fusion[k] = v
        elif k.startswith("clip."):
            clip[k[len("clip.") :]] = v
        else:
            clip[inverse.get(k, k)] = v
    return {"epoch": 0, "optimizer": {}, "model_state_dict": fusion, clip_key: clip, "result": result or {}}


def infer_options(ckpt: dict, source: str = "checkpoint") -> dict[str, Any]:
    """PromptPAR options that the tensors' shapes fix (the reference needs them repeated as CLI flags)."""
    clip = next((ckpt[k] for k in _CLIP_KEYS if k in ckpt), None)
    if clip is None or "visual.transformer.prompt_deep" not in clip:
        raise ParbenchError(source, "clip_model.visual.transformer.prompt_deep", "not found")
    deep = clip["visual.transformer.prompt_deep"]
    text = clip.get("transformer.prompt_text_deep")
    fusion = ckpt.get("model_state_dict", {})
    blocks = {k.split(".")[1] for k in fusion if k.startswith("blocks.")}
    opts: dict[str, Any] = {
        "variant": "reference",
        "vis_depth": int(deep.shape[0]),
        "vis_prompt": int(deep.shape[1]),
    }
    opts["use_textprompt"] = text is not None and text.shape[1] > 0
    if opts["use_textprompt"]:
        opts["text_prompt"] = int(text.shape[1])
    opts["use_div"] = "visual.part_class_embedding" in clip
    if opts["use_div"]:
        opts["div_num"] = int(clip["visual.part_class_embedding"].shape[0])
    opts["use_GL"] = "agg_bn.weight" in clip
    if "word_embed.weight" in fusion:
        opts["fusion_dim"] = int(fusion["word_embed.weight"].shape[0])  # heads cannot be read off: --set
    opts["use_mm_former"] = bool(blocks)
    if blocks:
        opts["mm_layers"] = len(blocks)
    return opts


# OpenAI CLIP architectures the reference code can hold (its build_model reads them off the tensors), plus the
# tiny test config; the first whose tensor shapes all match the checkpoint's CLIP is the backbone.
BACKBONE_CANDIDATES = ("ViT-L-14", "ViT-B-16", "ViT-B-32", "ViT-L-14-336", "parbench-tiny")


def _clip_state(ckpt: dict) -> dict:
    return next(ckpt[k] for k in _CLIP_KEYS if k in ckpt)


def _shapes_match(name: str, clip: dict) -> bool:
    from parbench.api import create_backbone

    own = create_backbone(name, "none", meta=True).model.state_dict()
    theirs = {
        k: v
        for k, v in clip.items()
        if k not in _PROMPT_KEYS and k not in _JIT_LEFTOVERS and not k.startswith(("agg_bn.", "softmax_model."))
    }
    return set(own) == set(theirs) and all(tuple(own[k].shape) == tuple(theirs[k].shape) for k in own)


def infer_backbone(ckpt: dict, source: str = "checkpoint", asked: str | None = None) -> str:
    """The CLIP architecture of a reference checkpoint, read off its tensors (as OpenAI's build_model does).
    An asked-for --backbone must match them."""
    clip = _clip_state(ckpt)
    if asked is not None:
        if not _shapes_match(asked, clip):
            raise ParbenchError(source, f"a CLIP of backbone {asked} (--backbone)", "tensors of another shape")
        return asked
    for name in BACKBONE_CANDIDATES:
        if _shapes_match(name, clip):
            return name
    width = tuple(clip["visual.conv1.weight"].shape) if "visual.conv1.weight" in clip else "?"
    raise ParbenchError(
        source,
        f"the CLIP of one of {', '.join(BACKBONE_CANDIDATES)} (or name it: --backbone)",
        f"visual.conv1.weight of shape {width}",
    )


def load_reference_file(path: str | Path) -> dict:
    """Read a reference checkpoint without running anything it might name (restricted unpickler)."""
    from parbench.api import load_torch

    return load_torch(path)


def is_reference_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and "model_state_dict" in obj and any(k in obj for k in _CLIP_KEYS)
