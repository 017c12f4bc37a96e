"""The one factory over open_clip: every method gets its CLIP model from `create_backbone`.

A backbone is an open_clip model name plus `pretrained`: an open_clip tag (e.g. "openai"; works when the
weights are in the local cache or can be downloaded), a path to a checkpoint file (open_clip format, a plain
state dict, or OpenAI's JIT `.pt`), or "none" for random weights, which must be asked for explicitly. The
tiny configs in parbench/model_configs/ register through the same open_clip mechanism.

The MLP activation is decided by where the weights come from, never guessed: OpenAI's CLIP (every `openai`
tag, an OpenAI JIT archive, the CLIP inside a PromptPAR reference checkpoint) uses QuickGELU, and open_clip
builds `ViT-L-14` with nn.GELU unless told otherwise (it only warns). A tag takes its pretrained config's
`quick_gelu`; a JIT archive is QuickGELU; a plain state-dict file takes the model name's (open_clip's own
`ViT-L-14-quickgelu` for OpenAI weights). The activation actually built is read back off the model and
recorded with every run.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from parbench.backbones.base import (
    DEFAULT_PRETRAINED,
    TINY,
    Backbone,
    activation_of,
    log,
    preprocess_of,
    quiet_open_clip,
    register_configs,
)
from parbench.backbones.timm_towers import is_timm
from parbench.backbones.weights import load_weights_file
from parbench.errors import ParbenchError


def backbone_kind(name: str) -> str:
    """The library a backbone name is built with: "timm" for `timm:NAME`, "hf" for `hf:FOLDER` (a transformers
    multimodal LLM), else "open_clip"."""
    from parbench.backbones.hf_vlm import is_hf

    return "timm" if is_timm(name) else "hf" if is_hf(name) else "open_clip"


def resolve_pretrained(name: str, pretrained: str | None) -> str:
    if pretrained in (None, ""):
        pretrained = "local" if backbone_kind(name) == "hf" else DEFAULT_PRETRAINED.get(name)
    if pretrained is None:
        library = "a timm tag (e.g. a1_in1k, or default)" if is_timm(name) else "an open_clip tag (e.g. openai)"
        raise ParbenchError(
            f"backbone {name}",
            f"--pretrained: {library}, a checkpoint file, or 'none' for random weights",
            "nothing given",
        )
    return pretrained


def _openai_uses_quickgelu(name: str) -> bool:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, "openai") or {}
    return bool(cfg.get("quick_gelu"))


def _create(name: str, quick_gelu: bool, seed: int | None, **kw: Any) -> Any:
    """open_clip.create_model with the activation forced to `quick_gelu`; random init drawn from its own
    generator seeded with `seed`, so building a backbone never moves the caller's global RNG."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]), quiet_open_clip() as caught:
        torch.manual_seed(0 if seed is None else seed)
        act = {"force_quick_gelu": True} if quick_gelu else {"quick_gelu": False}  # the final config's value
        model = open_clip.create_model(name, **act, **kw)
    for w in caught:
        if "QuickGELU mismatch" in str(w.message):  # open_clip only warns; a wrong activation is an error here
            raise ParbenchError(f"backbone {name}", "an activation that matches the weights", str(w.message))
    return model


@functools.cache
def tokenizer_for(name: str):
    """open_clip's tokenizer for a model, built once per process: it reads its vocabulary file each time it is
    made (0.1 s), and holds no state between calls."""
    import open_clip

    return open_clip.get_tokenizer(name)


def create_backbone(
    name: str,
    pretrained: str | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    meta: bool = False,
    quick_gelu: bool | None = None,
    seed: int = 0,
) -> Backbone:
    """Build an open_clip model with its weights, preprocessing and tokenizer.

    `meta=True` builds on torch's meta device (no memory, no weights): for counting parameters.
    `quick_gelu` forces the activation where the caller knows the weights' origin (PromptPAR reference
    checkpoints hold OpenAI CLIP); otherwise it follows the weights (see the module docstring).
    `seed` draws random ('none') weights; it is part of the backbone's identity.
    A `timm:NAME` backbone is an image tower from timm (backbones/timm_towers.py).
    """
    if is_timm(name):
        from parbench.backbones.timm_towers import create_timm_backbone

        return create_timm_backbone(name, resolve_pretrained(name, pretrained), device=device, meta=meta, seed=seed)
    if backbone_kind(name) == "hf":
        from parbench.backbones.hf_vlm import create_hf_backbone

        return create_hf_backbone(name, resolve_pretrained(name, pretrained), device=device, meta=meta, seed=seed)
    import open_clip
    import torch

    register_configs()
    if name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(name, open_clip.list_models(), n=4)
        raise ParbenchError(None, f"an open_clip model name (close: {', '.join(close) or 'none'})", f"'{name}'")
    pretrained = resolve_pretrained(name, pretrained)
    tags = open_clip.list_pretrained_tags_by_model(name)
    config_qg = bool(open_clip.get_model_config(name).get("quick_gelu", False))
    digest = ""
    if meta:
        cfg = {
            **open_clip.get_model_config(name),
            "quick_gelu": config_qg if quick_gelu is None else quick_gelu,
        }
        with torch.device("meta"):  # QuickGELU modules on the meta device are still QuickGELU: read back below
            model = open_clip.model.CLIP(**cfg)
    elif pretrained == "none":
        qg = config_qg if quick_gelu is None else quick_gelu
        model = _create(name, qg, seed, pretrained=None, precision=precision, device=device)
    elif pretrained in tags:
        tag_qg = bool((open_clip.get_pretrained_cfg(name, pretrained) or {}).get("quick_gelu", False))
        if config_qg and not tag_qg:
            raise ParbenchError(
                f"backbone {name} pretrained '{pretrained}'",
                "a GELU model name for weights trained with GELU (drop '-quickgelu')",
                "a QuickGELU config",
            )
        try:
            model = _create(
                name,
                tag_qg if quick_gelu is None else quick_gelu,
                seed,
                pretrained=pretrained,
                precision=precision,
                device=device,
                require_pretrained=True,
            )
        except ParbenchError:
            raise
        except Exception as e:  # download refused/offline or a corrupt cache entry
            cache = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
            raise ParbenchError(
                f"backbone {name} pretrained '{pretrained}'",
                f"weights in the local cache ({cache}, ~/.cache/clip) or reachable for download; "
                f"or pass --pretrained /path/to/weights.pt (open_clip or OpenAI JIT file)",
                f"{type(e).__name__}: {str(e)[:200]}",
            ) from None
    elif name == TINY and pretrained == "synthetic":  # toy-scale CLIP-style pretraining, built once, cached
        from parbench.backbones.tiny import ensure_weights

        path = str(ensure_weights(log=log))
        return create_backbone(name, path, device=device, precision=precision, quick_gelu=quick_gelu)
    elif Path(pretrained).is_file():
        from parbench.hashing import file_sha256

        sd, jit = load_weights_file(Path(pretrained))
        qg = True if jit else config_qg  # OpenAI's JIT archives are always QuickGELU
        if quick_gelu is not None:
            qg = quick_gelu
        elif not qg and _openai_uses_quickgelu(name):
            log(
                f"note: {name} builds with GELU; if {Path(pretrained).name} holds OpenAI CLIP weights (QuickGELU), "
                f"use --backbone {name}-quickgelu"
            )
        model = _create(name, qg, seed, pretrained=None, precision="fp32", device="cpu")
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k != "attn_mask" and not k.endswith(".attn_mask")]
        if missing or unexpected:
            raise ParbenchError(
                pretrained,
                f"weights for {name}",
                f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})",
            )
        model = model.to(device)
        digest = file_sha256(pretrained)
    else:
        known = [*tags, "synthetic"] if name == TINY else tags
        raise ParbenchError(
            f"backbone {name}",
            f"pretrained = a known tag ({', '.join(known) or 'none known'}), an existing file, or 'none'",
            f"'{pretrained}'",
        )
    tokenizer = tokenizer_for(name) if not meta else None
    embed_dim = int(model.text_projection.shape[1]) if model.text_projection is not None else 0
    return Backbone(
        name,
        pretrained,
        model,
        preprocess_of(model),
        tokenizer,
        embed_dim,
        activation_of(model),
        digest,
        seed if pretrained == "none" else None,
    )
