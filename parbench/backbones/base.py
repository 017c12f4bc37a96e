"""What every part of the backbone package shares: the preprocessing and backbone records, the configs that
parbench registers with open_clip (the tiny test/demo configs), and reading a built model's activation."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
TINY = "parbench-tiny"
# tiny configs have no weights anywhere; parbench-tiny-sigmoid carries a logit bias as SigLIP does (sigmoid
# head; not named "siglip", which open_clip reads as "fetch the SigLIP tokenizer")
DEFAULT_PRETRAINED = {TINY: "none", "parbench-tiny-sigmoid": "none"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATIONS = ("bicubic", "bilinear")


@dataclass(frozen=True)
class Preprocess:
    """Preprocessing that travels with the weights (then the method's and the user's settings); the run record
    stores the values actually used."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    letterbox: bool = False  # keep the aspect ratio, centre, pad with black (PromptPAR's Pad_datasets)


@dataclass
class Backbone:
    """A built backbone. `visual` is its image tower: a module mapping (B, 3, H, W) images to (B, embed_dim)
    pooled features (open_clip's projected embedding; a timm model's pre-logits), which is what every image
    method holds and what parameter counts call the image tower."""

    name: str
    pretrained: str
    model: Any  # open_clip CLIP, or a timm model built with num_classes=0
    preprocess: Preprocess
    tokenizer: Any  # None where there is no text tower (timm)
    embed_dim: int
    activation: str = "gelu"  # "quickgelu" or "gelu", read off the built model
    weights_sha256: str = ""  # content hash of a weights file ("" for tags and random weights)
    seed: int | None = None  # the seed random ('none') weights were drawn with
    kind: str = "open_clip"  # "open_clip" (image and text towers), "timm" (an image tower), "hf" (a chat VLM)

    @property
    def visual(self) -> Any:
        if self.kind == "hf":  # a multimodal LLM's vision encoder (what `image_tower_params` counts)
            for path in ("model.vision_tower", "model.vision_model", "vision_tower", "visual"):
                try:
                    return self.model.get_submodule(path)
                except AttributeError:
                    continue
            return self.model
        return self.model.visual if self.kind == "open_clip" else self.model

    @property
    def token_dim(self) -> int:
        """Width of the tokens `image_tokens` returns (a CLIP tower's transformer width: tokens come before
        its projection to embed_dim)."""
        return int(self.visual.transformer.width) if self.kind == "open_clip" else int(self.model.num_features)

    @property
    def has_text(self) -> bool:
        return self.kind == "open_clip"

    def blocks(self) -> list:
        """The image tower's stages from input to output (transformer blocks, ResNet layers, Swin/ConvNeXt
        stages): what layer-wise learning rates decay over. Empty where a tower has no such list."""
        visual = self.visual
        if hasattr(visual, "transformer"):  # open_clip's VisionTransformer
            return list(visual.transformer.resblocks)
        for attr in ("blocks", "layers", "stages"):
            seq = getattr(visual, attr, None)
            if seq is not None and hasattr(seq, "__len__") and len(seq):
                return list(seq)
        return [getattr(visual, f"layer{i}") for i in range(1, 5) if hasattr(visual, f"layer{i}")]

    def describe(self) -> dict:
        """Everything that decides the backbone's outputs: what caches and run keys are made of."""
        out = {
            "name": self.name,
            "pretrained": self.pretrained,
            "activation": self.activation,
            "preprocess": asdict(self.preprocess),
        }
        if self.kind != "open_clip":
            out["kind"] = self.kind
        if self.weights_sha256:
            out["weights_sha256"] = self.weights_sha256
        if self.pretrained == "none":
            out["seed"] = self.seed
        return out


_registered = False


def register_configs() -> None:
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def list_backbones() -> list[str]:
    import open_clip

    register_configs()
    return open_clip.list_models()


def preprocess_of(model: Any) -> Preprocess:
    visual = getattr(model, "visual", None)
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = (size, size) if isinstance(size, int) else tuple(size)
    return Preprocess(
        size=size,
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
    )


def image_tokens(visual: Any, images: Any) -> Any:
    """The image tower's last-layer token features (B, N, W) before pooling: patch tokens of a CLIP
    VisionTransformer (after ln_post, before the projection), a timm model's `forward_features` (a transformer's
    tokens, prefix tokens included; a CNN's feature map flattened to H*W tokens). For methods that attend over
    the image (query heads) rather than use the pooled feature."""
    if hasattr(visual, "output_tokens") and hasattr(visual, "transformer"):  # open_clip
        previous = visual.output_tokens
        visual.output_tokens = True
        try:
            _, tokens = visual(images)
        finally:
            visual.output_tokens = previous
        return tokens
    feats = visual.forward_features(images)
    if feats.ndim == 4:  # (B, C, H, W) -> (B, H*W, C)
        feats = feats.flatten(2).transpose(1, 2)
    return feats


def activation_of(model: Any) -> str:
    """The MLP activation the built model really uses (not what a config says)."""
    import open_clip

    quick = any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())
    return "quickgelu" if quick else "gelu"


def log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


class _DropRandomInitNotice(logging.Filter):
    """open_clip logs "No pretrained weights loaded ... initialized randomly" whenever parbench builds the
    architecture and then loads the weights itself (files, tiny weights); parbench records what it loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def quiet_open_clip():
    flt = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        root.removeFilter(flt)
