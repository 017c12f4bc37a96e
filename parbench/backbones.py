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

import logging
import os
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError

CONFIG_DIR = Path(__file__).parent / "model_configs"
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
        try:
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as e:
            raise ParbenchError(path, "an OpenAI CLIP TorchScript archive", str(e).splitlines()[0]) from None
        for k in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(k, None)
        return {k: v.float() for k, v in sd.items()}, True
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or it holds objects that weights_only refuses
        raise ParbenchError(
            path, "a CLIP checkpoint (open_clip state dict or OpenAI JIT .pt)", str(e).splitlines()[0][:200]
        ) from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ParbenchError(path, "a state dict of tensors", type(ckpt).__name__)
    if sd and next(iter(sd)).startswith("module."):
        sd = {k[7:]: v for k, v in sd.items()}
    return sd, False


def _preprocess_of(model: Any) -> Preprocess:
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


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


class _DropRandomInitNotice(logging.Filter):
    """open_clip logs "No pretrained weights loaded ... initialized randomly" whenever parbench builds the
    architecture and then loads the weights itself (files, tiny weights); parbench records what it loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_open_clip():
    flt = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        root.removeFilter(flt)


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


def _openai_uses_quickgelu(name: str) -> bool:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, "openai") or {}
    return bool(cfg.get("quick_gelu"))


def _create(name: str, quick_gelu: bool, seed: int | None, **kw: Any) -> Any:
    """open_clip.create_model with the activation forced to `quick_gelu`; random init drawn from its own
    generator seeded with `seed`, so building a backbone never moves the caller's global RNG."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]), _quiet_open_clip() as caught:
        torch.manual_seed(0 if seed is None else seed)
        act = {"force_quick_gelu": True} if quick_gelu else {"quick_gelu": False}  # the final config's value
        model = open_clip.create_model(name, **act, **kw)
    for w in caught:
        if "QuickGELU mismatch" in str(
            w.message
        ):  # open_clip only warns; a wrong activation is an error here
            raise ParbenchError(f"backbone {name}", "an activation that matches the weights", str(w.message))
    return model


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
    config_qg = bool(open_clip.get_model_config(name).get("quick_gelu", False))
    digest = ""
    if meta:
        cfg = {
            **open_clip.get_model_config(name),
            "quick_gelu": config_qg if quick_gelu is None else quick_gelu,
        }
        with torch.device(
            "meta"
        ):  # QuickGELU modules on the meta device are still QuickGELU: read back below
            model = open_clip.model.CLIP(**cfg)
    elif pretrained == "none":
        qg = config_qg if quick_gelu is None else quick_gelu
        model = _create(name, qg, seed, pretrained=None, precision=precision, device=device)
    elif pretrained in tags:
        tag_qg = bool((open_clip.get_pretrained_cfg(name, pretrained) or {}).get("quick_gelu", False))
        if config_qg and not tag_qg:
            raise ParbenchError(f"backbone {name} pretrained '{pretrained}'",
                                "a GELU model name for weights trained with GELU (drop '-quickgelu')",
                                "a QuickGELU config")  # fmt: skip
        try:
            model = _create(name, tag_qg if quick_gelu is None else quick_gelu, seed, pretrained=pretrained,
                            precision=precision, device=device, require_pretrained=True)  # fmt: skip
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
        from parbench.tiny_pretrain import ensure_weights

        path = str(ensure_weights(log=_log))
        return create_backbone(name, path, device=device, precision=precision, quick_gelu=quick_gelu)
    elif Path(pretrained).is_file():
        from parbench.hashing import file_sha256

        sd, jit = load_weights_file(Path(pretrained))
        qg = True if jit else config_qg  # OpenAI's JIT archives are always QuickGELU
        if quick_gelu is not None:
            qg = quick_gelu
        elif not qg and _openai_uses_quickgelu(name):
            _log(f"note: {name} builds with GELU; if {Path(pretrained).name} holds OpenAI CLIP weights (QuickGELU), "
                 f"use --backbone {name}-quickgelu")  # fmt: skip
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
    tokenizer = open_clip.get_tokenizer(name) if not meta else None
    embed_dim = int(model.text_projection.shape[1]) if model.text_projection is not None else 0
    return Backbone(name, pretrained, model, _preprocess_of(model), tokenizer, embed_dim, activation_of(model), digest,
                    seed if pretrained == "none" else None)  # fmt: skip
