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
    name: str
    pretrained: str
    model: Any  # open_clip CLIP
    preprocess: Preprocess
    tokenizer: Any
    embed_dim: int
    activation: str = "gelu"  # "quickgelu" or "gelu", read off the built model
    weights_sha256: str = ""  # content hash of a weights file ("" for tags and random weights)
    seed: int | None = None  # the seed random ('none') weights were drawn with

    def describe(self) -> dict:
        """Everything that decides the backbone's outputs: what caches and run keys are made of."""
        out = {"name": self.name, "pretrained": self.pretrained, "activation": self.activation,
               "preprocess": asdict(self.preprocess)}  # fmt: skip
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
