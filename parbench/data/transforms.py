"""Image transforms built from the backbone's preprocessing (or a method's named override)."""

from __future__ import annotations

from parbench.backbones import Preprocess

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # PromptPAR's normalisation


def build_transform(
    pre: Preprocess, train: bool, pad: int = 10, flip: bool = True, normalization: str = "backbone"
):
    """Train: resize, pad + random crop, flip (the PAR references' recipe); eval: resize only.

    `normalization`: "backbone" uses the weights' own mean/std; "half" uses mean = std = 0.5 (PromptPAR).
    """
    from torchvision import transforms as T

    mean, std = (pre.mean, pre.std) if normalization == "backbone" else HALF
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}.get(
        pre.interpolation, T.InterpolationMode.BICUBIC
    )
    steps = [T.Resize(pre.size, interpolation=interp)]
    if train:
        if pad:
            steps += [T.Pad(pad), T.RandomCrop(pre.size)]
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def describe(pre: Preprocess, train: bool, pad: int, flip: bool, normalization: str) -> str:
    """A stable description of a transform, for cache keys and run records."""
    norm = "half" if normalization == "half" else f"{pre.mean}/{pre.std}"
    aug = f"pad{pad}-flip{int(flip)}" if train else "eval"
    return f"{pre.size}-{pre.interpolation}-{norm}-{aug}"
