"""Image towers from timm (`--backbone timm:NAME`): any timm model, ImageNet or other weights, as the image
tower of the feature and fine-tuning methods.

timm is the library made for this (one `create_model` for ~1,000 architectures, each with its pretrained
config), so parbench does not re-implement towers: the model is built with `num_classes=0`, so its forward is
the pooled pre-logits feature (B, num_features), and its preprocessing (input size, mean/std, interpolation)
comes from the pretrained config of the weights' tag.

`pretrained` is "none" (random weights drawn from the run's seed), a weights file (a state dict, loaded
weights-only, or safetensors; passed through timm's own checkpoint filter, so original-format files such as
`jx_vit_base_p16_224-80ecf9dd.pth` load, and position embeddings are resized to the model), or a timm tag
(`a1_in1k`, `augreg_in21k_ft_in1k`, or `default`) read from timm's local Hugging Face cache. Loading is strict:
a key the model misses, or one the file has that the model does not use (beyond the classifier a tower drops),
is an error, never a silently half-random tower.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from parbench.backbones import keymaps
from parbench.backbones.base import Backbone, Preprocess
from parbench.errors import ParbenchError

PREFIX = "timm:"


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def arch_of(name: str) -> str:
    """`timm:resnet50.a1_in1k` -> `resnet50` (the architecture; a tag in the name is a weights choice)."""
    return name[len(PREFIX) :].split(".", 1)[0]


def _check_name(name: str) -> str:
    import timm

    arch = arch_of(name)
    if not arch or arch not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=4)
        raise ParbenchError(None, f"a timm model name after 'timm:' (close: {', '.join(close) or 'none'})", f"'{name}'")
    return arch


def _tag_in_name(name: str) -> str | None:
    rest = name[len(PREFIX) :]
    return rest.split(".", 1)[1] if "." in rest else None


def tags(name: str) -> list[str]:
    """The pretrained tags timm knows for the architecture (weights may or may not be in the local cache)."""
    import timm

    arch = arch_of(name)
    return [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*")]


def _preprocess(model: Any) -> Preprocess:
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    interp = cfg.get("interpolation", "bicubic")
    return Preprocess(
        size=tuple(cfg["input_size"][1:]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=interp if interp in ("bicubic", "bilinear") else "bicubic",
    )


def _activation(model: Any) -> str:
    """The first activation module the model holds, by class name ("gelu", "relu", ...)."""
    import torch.nn as nn

    acts = (nn.GELU, nn.ReLU, nn.SiLU, nn.Hardswish, nn.ReLU6, nn.Mish, nn.Tanh, nn.Sigmoid)
    for m in model.modules():
        if isinstance(m, acts):
            return type(m).__name__.lower()
    return "none"


@contextmanager
def _load_report():
    """timm logs, instead of raising, the keys a non-strict load missed or did not use: collect them."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg.startswith(("Missing keys", "Unexpected keys", "Unable to convert")):
                found.append(msg)

    logger = logging.getLogger("timm.models._builder")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _cached_weights(name: str, arch: str, in_name: str | None, pretrained: str) -> tuple[Path, str]:
    """The weights file of a timm tag in the local Hugging Face cache, found without asking the network (a
    machine without it would otherwise wait on retries); then loaded as any weights file is."""
    known = tags(name)
    tag = (in_name or "") if pretrained == "default" else pretrained
    if tag and tag not in known:
        raise ParbenchError(
            f"backbone {name}",
            f"pretrained = a timm tag ({', '.join(known[:8]) or 'none known'}"
            f"{', ...' if len(known) > 8 else ''}), 'default', a weights file, or 'none'",
            f"'{pretrained}'",
        )
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub, filename) if hub else None
        if isinstance(found, str):
            return Path(found), f"{arch}.{tag}" if tag else arch
    cache = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    raise ParbenchError(
        f"backbone {name} pretrained '{pretrained}'",
        f"the weights in timm's local cache ({cache}, {hub or 'no Hugging Face id'}); or pass "
        "--pretrained /path/to/weights.pth (or .safetensors)",
        "not cached",
    )


def read_state_dict(path: Path) -> dict:
    """A state dict of tensors from a weights file: safetensors, or torch's weights-only loader (nothing in the
    file can run code); common wrappers (`state_dict`, `model`, `module.` prefixes) unwrapped."""
    import torch

    from parbench.torchfile import load_weights_only

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # a damaged or foreign file
            raise ParbenchError(path, "a safetensors weights file", f"{type(e).__name__}: {e}") from None
    ckpt = load_weights_only(path, "a timm weights file (a state dict of tensors)")
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ParbenchError(path, "a state dict of tensors", type(ckpt).__name__)
    if next(iter(ckpt)).startswith("module."):
        ckpt = {k.removeprefix("module."): v for k, v in ckpt.items()}
    return ckpt


def _raw_weights(path: Path):
    """A weights file as saved (wrappers and all): safetensors, or torch's weights-only loader."""
    if path.suffix == ".safetensors":
        return read_state_dict(path)
    from parbench.torchfile import load_weights_only

    return load_weights_only(path, "a weights file (a state dict of tensors, possibly wrapped)")


def _create(arch: str, seed: int, **kw: Any) -> Any:
    """timm.create_model with random init drawn from its own generator seeded with `seed`."""
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(arch, num_classes=0, **kw)


def create_timm_backbone(
    name: str, pretrained: str, *, device: str = "cpu", meta: bool = False, seed: int = 0
) -> Backbone:
    """A timm image tower as a `Backbone` (see the module docstring for `pretrained`)."""
    import timm
    import torch

    from parbench.hashing import file_sha256

    arch = _check_name(name)
    in_name = _tag_in_name(name)
    variant = f"{arch}.{in_name}" if in_name else arch  # a tag in the name: that tag's preprocessing
    if in_name and in_name not in tags(name):
        raise ParbenchError(f"backbone {name}", f"a timm tag of {arch} ({', '.join(tags(name)[:8])})", f"'{in_name}'")
    digest = ""
    keymap, weights_file = keymaps.split(pretrained)  # "hap:/w/hap.pth": a file in another project's layout
    km = keymaps.keymaps()[keymap] if keymap else {}
    model_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in km.get("model", {}).items()}
    if meta:
        with torch.device("meta"):
            model = timm.create_model(variant, num_classes=0, **model_kw)
    elif pretrained == "none":
        model = _create(variant, seed)
    else:
        if keymap:
            path = Path(weights_file)
            sd = keymaps.apply(keymaps.check(keymap, arch, path), _raw_weights(path), path)
        else:
            if Path(pretrained).is_file():
                path = Path(pretrained)
            else:  # a tag: its weights and its preprocessing
                path, variant = _cached_weights(name, arch, in_name, pretrained)
            sd = read_state_dict(path)
        with _load_report() as problems:
            try:
                model = _create(variant, seed, pretrained=True, pretrained_cfg_overlay={"state_dict": sd}, **model_kw)
            except (RuntimeError, KeyError, ValueError) as e:  # shapes that no filter can reconcile
                raise ParbenchError(path, f"weights for timm {arch}", str(e).splitlines()[0][:240]) from None
        if problems:
            raise ParbenchError(path, f"weights for timm {arch} (every key used, none missing)", problems[0][:240])
        if keymap or Path(pretrained).is_file():
            digest = file_sha256(path)
    if not meta:
        model = model.to(device)
    pre = _preprocess(model)
    if km.get("preprocess"):  # the pretraining's input size and normalisation, where the map states them
        from dataclasses import replace

        over = {k: tuple(v) for k, v in km["preprocess"].items()}
        pre = replace(pre, **over)
    return Backbone(
        name,
        pretrained,
        model,
        pre,
        None,
        int(model.num_features),
        _activation(model),
        digest,
        seed if pretrained == "none" else None,
        kind="timm",
    )
