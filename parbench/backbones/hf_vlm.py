"""Multimodal LLMs from Hugging Face `transformers` (`--backbone hf:/path/to/model-folder`), for zero-shot methods
that ask a chat model about an image (the `vlm` method). Optional: `pip install 'parbench[vlm]'`.

The folder is what `save_pretrained` writes (config, weights, processor: tokenizer, image processor, chat
template), read with `local_files_only` (nothing is downloaded). `pretrained` is "local" (the folder's weights) or
"none" (random weights from the config, drawn from the run's seed: tests and timing). The preprocessing comes
from the folder's image processor: its target size (a crop size, a fixed size, or the longest edge of an
unsplit image), mean and std; parbench resizes each person crop to it (no centre crop: a pedestrian crop is
tall), so the pixels a model sees are what its processor's normalisation gives. The weights' identity is the
content hash of the folder's files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parbench.backbones.base import Backbone, Preprocess
from parbench.errors import ParbenchError

PREFIX = "hf:"


def is_hf(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_of(name: str) -> Path:
    """The model folder a name means: a path, or a tiny built-in (`hf:tiny-llava`, `hf:tiny-smolvlm`), written
    into the cache on first use."""
    rest = name[len(PREFIX) :]
    from parbench.backbones import tiny_vlm

    if tiny_vlm.is_tiny(rest):
        return tiny_vlm.folder(rest)
    return Path(rest).expanduser()


def folder_sha256(folder: Path) -> str:
    from parbench.hashing import files_sha256

    return files_sha256(sorted(p for p in folder.rglob("*") if p.is_file()))


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ParbenchError(
            "backbone hf:...", "Hugging Face transformers for multimodal LLMs (pip install 'parbench[vlm]')", str(e)
        ) from None
    return transformers


def _preprocess(image_processor: Any) -> Preprocess:
    """The model's own input size and normalisation, read off its image processor."""

    def pair(d):
        if isinstance(d, int):
            return d, d
        if d is None:
            return None
        get = d.get if isinstance(d, dict) else (lambda k: getattr(d, k, None))  # a dict or a SizeDict
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
        for edge in ("longest_edge", "shortest_edge"):
            if get(edge):
                return int(get(edge)), int(get(edge))
        return None

    size = None
    for attr in ("crop_size", "max_image_size", "size"):
        size = size or pair(getattr(image_processor, attr, None))
    if size is None:
        raise ParbenchError(type(image_processor).__name__, "an image processor with a target size", "none")
    mean = tuple(float(x) for x in getattr(image_processor, "image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(x) for x in getattr(image_processor, "image_std", (0.5, 0.5, 0.5)))
    return Preprocess(size=size, mean=mean, std=std, interpolation="bicubic")


def create_hf_backbone(
    name: str, pretrained: str, *, device: str = "cpu", meta: bool = False, seed: int = 0
) -> Backbone:
    """A chat VLM and its processor as a `Backbone` (`tokenizer` holds the processor)."""
    import torch

    t = _transformers()
    t.utils.logging.disable_progress_bar()  # parbench's own progress goes to stderr; theirs would interleave
    folder = folder_of(name)
    if not (folder / "config.json").is_file():
        raise ParbenchError(
            f"backbone {name}",
            "a transformers model folder (config.json, weights, processor files, as save_pretrained writes them)",
            f"no config.json in {folder.resolve()}",
        )
    if pretrained not in ("local", "none"):
        raise ParbenchError(
            f"backbone {name}", "--pretrained local (the folder's weights) or none (random)", pretrained
        )
    try:
        processor = t.AutoProcessor.from_pretrained(folder, local_files_only=True)
        config = t.AutoConfig.from_pretrained(folder, local_files_only=True)
        if meta:
            with torch.device("meta"):
                model = t.AutoModelForImageTextToText.from_config(config)
        elif pretrained == "none":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = t.AutoModelForImageTextToText.from_config(config)
        else:
            model = t.AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ParbenchError(
            folder, "a chat VLM that this transformers version loads", f"{type(e).__name__}: {e}"
        ) from None
    model = model.float().eval()
    if not meta:
        model = model.to(device)
    return Backbone(
        name,
        pretrained,
        model,
        _preprocess(processor.image_processor),
        processor,
        int(getattr(config.get_text_config(), "hidden_size", 0)),
        str(getattr(config.get_text_config(), "hidden_act", "")),
        "" if meta or pretrained == "none" else folder_sha256(folder),
        seed if pretrained == "none" else None,
        kind="hf",
    )
