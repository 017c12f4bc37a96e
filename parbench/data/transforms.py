"""Image transforms: the preprocessing a run uses is resolved once (weights < method < settings) into a
`Preprocess`, and every path that feeds a model (training, evaluation, feature caching, eval, predict) builds
its transform from that one value."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from parbench.backbones import INTERPOLATIONS, Preprocess

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # PromptPAR's normalisation
NORMALIZATIONS = ("backbone", "half")


def resolve_preprocess(weights: Preprocess, cfg: Any, method_defaults: dict | None = None) -> Preprocess:
    """The weights' own preprocessing, then the method's defaults (PromptPAR's reference variant: mean = std =
    0.5 and a bilinear resize), then the run's explicit settings (`normalization`, `interpolation`: "auto"
    leaves the earlier choice; `letterbox`)."""
    chosen = {"normalization": "backbone", "interpolation": weights.interpolation}
    for k, v in (method_defaults or {}).items():
        if v is not None:
            chosen[k] = v
    if cfg.normalization != "auto":
        chosen["normalization"] = cfg.normalization
    if cfg.interpolation != "auto":
        chosen["interpolation"] = cfg.interpolation
    mean, std = (weights.mean, weights.std) if chosen["normalization"] == "backbone" else HALF
    return replace(weights, mean=tuple(mean), std=tuple(std), interpolation=chosen["interpolation"],
                   letterbox=bool(cfg.letterbox))  # fmt: skip


class Letterbox:
    """Scale to fit `size` (H, W) keeping the aspect ratio, centre, and pad with black: what PromptPAR's
    `Pad_datasets` copies hold (a pedestrian image scaled to the target height, black borders left and right),
    computed on the fly so nobody has to generate padded copies."""

    def __init__(self, size: tuple[int, int], interpolation: Any):
        self.size, self.interpolation = tuple(size), interpolation

    def __call__(self, img):
        from PIL import Image

        th, tw = self.size
        w, h = img.size
        scale = min(th / h, tw / w)
        nw, nh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
        resample = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.BICUBIC
        canvas = Image.new("RGB", (tw, th), (0, 0, 0))
        canvas.paste(img.convert("RGB").resize((nw, nh), resample), ((tw - nw) // 2, (th - nh) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size}, interpolation={self.interpolation})"


def build_transform(pre: Preprocess, train: bool, pad: int = 10, flip: bool = True):
    """Train: resize (or letterbox), pad + random crop, flip (the PAR references' recipe); eval: resize only."""
    from torchvision import transforms as T

    if pre.interpolation not in INTERPOLATIONS:
        from parbench.errors import ParbenchError

        raise ParbenchError("interpolation", f"one of {', '.join(INTERPOLATIONS)}", repr(pre.interpolation))
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
        pre.interpolation
    ]
    steps = [
        Letterbox(pre.size, pre.interpolation) if pre.letterbox else T.Resize(pre.size, interpolation=interp)
    ]
    if train:
        if pad:
            steps += [T.Pad(pad), T.RandomCrop(pre.size)]
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


def describe(pre: Preprocess, train: bool, pad: int = 0, flip: bool = False) -> str:
    """A stable description of a transform, for cache keys and run records."""
    aug = f"pad{pad}-flip{int(flip)}" if train else "eval"
    box = "-letterbox" if pre.letterbox else ""
    return f"{pre.size}-{pre.interpolation}{box}-{pre.mean}/{pre.std}-{aug}"
