"""The one factory over open_clip: every method gets its CLIP model from `create_backbone`.

A backbone is an open_clip model name plus `pretrained`: an open_clip tag (e.g. "openai"; works when the
weights are in the local cache or can be downloaded), a path to a checkpoint file (open_clip format, a plain
state dict, or OpenAI's JIT `.pt`), or "none" for random weights, which must be asked for explicitly. The
tiny configs in parbench/model_configs/ register through the same open_clip mechanism.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError

CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY = "parbench-tiny"
DEFAULT_PRETRAINED = {TINY: "none"}  # tiny configs have no weights anywhere
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """Preprocessing that travels with the weights; the run record stores the values actually used."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"


@dataclass
class Backbone:
    name: str
    pretrained: str
    model: Any  # open_clip CLIP
    preprocess: Preprocess
    tokenizer: Any
    embed_dim: int

    def describe(self) -> dict:
        return {"name": self.name, "pretrained": self.pretrained, "preprocess": asdict(self.preprocess)}


_registered = False


def _register_configs() -> None:
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def list_backbones() -> list[str]:
    import open_clip

    _register_configs()
    return open_clip.list_models()


def _is_jit_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_weights_file(path: Path) -> tuple[dict, bool]:
    """State dict from an open_clip/plain checkpoint or an OpenAI JIT archive; (state_dict, is_openai_jit)."""
    import torch

    if _is_jit_archive(path):
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        for k in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(k, None)
        return {k: v.float() for k, v in sd.items()}, True
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or it holds objects that weights_only refuses
        raise ParbenchError(
            path, "a CLIP checkpoint (open_clip state dict or OpenAI JIT .pt)", str(e)
        ) from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ParbenchError(path, "a state dict", type(ckpt).__name__)
    if sd and next(iter(sd)).startswith("module."):
        sd = {k[7:]: v for k, v in sd.items()}
    return sd, False


def _preprocess_of(model: Any) -> Preprocess:
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    size = cfg.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    return Preprocess(
        size=size,
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
    )


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def resolve_pretrained(name: str, pretrained: str | None) -> str:
    if pretrained in (None, ""):
        pretrained = DEFAULT_PRETRAINED.get(name)
    if pretrained is None:
        raise ParbenchError(
            f"backbone {name}",
            "--pretrained: an open_clip tag (e.g. openai), a checkpoint file, or 'none' for random weights",
            "nothing given",
        )
    return pretrained


def create_backbone(
    name: str,
    pretrained: str | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    meta: bool = False,
) -> Backbone:
    """Build an open_clip model with its weights, preprocessing and tokenizer.

    `meta=True` builds on torch's meta device (no memory, no weights): for counting parameters.
    """
    import open_clip
    import torch

    _register_configs()
    if name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(name, open_clip.list_models(), n=4)
        raise ParbenchError(
            None, f"an open_clip model name (close: {', '.join(close) or 'none'})", f"'{name}'"
        )
    pretrained = resolve_pretrained(name, pretrained)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if meta:
        cfg = open_clip.get_model_config(name)
        with torch.device("meta"):
            model = open_clip.model.CLIP(**cfg)
    elif pretrained == "none":
        model = open_clip.create_model(name, pretrained=None, precision=precision, device=device)
    elif pretrained in tags:
        try:
            model = open_clip.create_model(
                name, pretrained=pretrained, precision=precision, device=device, require_pretrained=True
            )
        except Exception as e:  # download refused/offline or a corrupt cache entry
            cache = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
            raise ParbenchError(
                f"backbone {name} pretrained '{pretrained}'",
                f"weights in the local cache ({cache}, ~/.cache/clip) or reachable for download; "
                f"or pass --pretrained /path/to/weights.pt (open_clip or OpenAI JIT file)",
                f"{type(e).__name__}: {str(e)[:200]}",
            ) from None
    elif name == TINY and pretrained == "synthetic":  # toy-scale CLIP-style pretraining, built once, cached
        from parbench.tiny_pretrain import ensure_weights

        path = str(ensure_weights(log=_log))
        return create_backbone(name, path, device=device, precision=precision)
    elif Path(pretrained).is_file():
        sd, jit = load_weights_file(Path(pretrained))
        model = open_clip.create_model(
            name, pretrained=None, precision="fp32", device="cpu", force_quick_gelu=jit
        )
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k != "attn_mask" and not k.endswith(".attn_mask")]
        if missing or unexpected:
            raise ParbenchError(
                pretrained,
                f"weights for {name}",
                f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})",
            )
        model = model.to(device)
    else:
        known = [*tags, "synthetic"] if name == TINY else tags
        raise ParbenchError(
            f"backbone {name}",
            f"pretrained = a known tag ({', '.join(known) or 'none known'}), an existing file, or 'none'",
            f"'{pretrained}'",
        )
    tokenizer = open_clip.get_tokenizer(name) if not meta else None
    embed_dim = int(model.text_projection.shape[1]) if model.text_projection is not None else 0
    return Backbone(name, pretrained, model, _preprocess_of(model), tokenizer, embed_dim)
