"""Image transforms: the preprocessing a run uses is resolved once (weights < method < settings) into a
`Preprocess`, and every path that feeds a model (training, evaluation, feature caching, eval, predict) builds
its transform from that one value."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from parbench.backbones import INTERPOLATIONS, Preprocess

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # PromptPAR's and VTB's normalisation
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # Rethinking_of_PAR's, whatever the backbone
NORMALIZATIONS = ("backbone", "half", "imagenet")


def resolve_preprocess(weights: Preprocess, cfg: Any, method_defaults: dict | None = None) -> Preprocess:
    """The weights' own preprocessing, then the method's defaults (PromptPAR's reference variant: mean = std =
    0.5 and a bilinear resize; the field baselines' input `size`, e.g. 256 x 192), then the run's explicit
    settings (`normalization`, `interpolation`: "auto" leaves the earlier choice; `letterbox`)."""
    chosen = {"normalization": "backbone", "interpolation": weights.interpolation, "size": weights.size}
    for k, v in (method_defaults or {}).items():
        if v is not None:
            chosen[k] = v
    if cfg.normalization != "auto":
        chosen["normalization"] = cfg.normalization
    if cfg.interpolation != "auto":
        chosen["interpolation"] = cfg.interpolation
    mean, std = {"backbone": (weights.mean, weights.std), "half": HALF, "imagenet": IMAGENET}[chosen["normalization"]]
    return replace(
        weights,
        mean=tuple(mean),
        std=tuple(std),
        interpolation=chosen["interpolation"],
        size=tuple(chosen["size"]),
        letterbox=bool(cfg.letterbox),
    )


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


class ImageTransform:
    """The image pipeline of a run, in three parts so a split can cache the expensive one:

    - `base(img)`: the deterministic resize (or letterbox) to the input size, as uint8 (3, H, W);
    - `augment(x, rng)` (training only): pad with zeros, crop back at a random offset, flip half the time (the
      PAR references' recipe, torchvision's Pad + RandomCrop + RandomHorizontalFlip), drawing from `rng`, a
      numpy Generator the caller seeds per image and epoch, never from a global RNG;
    - `normalize(x)`: to float in [0, 1] (ToTensor), then (x - mean) / std.
    """

    def __init__(self, pre: Preprocess, train: bool, pad: int = 10, flip: bool = True):
        from torchvision import transforms as T

        if pre.interpolation not in INTERPOLATIONS:
            from parbench.errors import ParbenchError

            raise ParbenchError("interpolation", f"one of {', '.join(INTERPOLATIONS)}", repr(pre.interpolation))
        mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[pre.interpolation]
        self.resize = (
            Letterbox(pre.size, pre.interpolation) if pre.letterbox else T.Resize(pre.size, interpolation=mode)
        )
        self.pre, self.train, self.pad, self.flip = pre, train, pad if train else 0, flip and train
        self.mean = torch.tensor(pre.mean).view(3, 1, 1)
        self.std = torch.tensor(pre.std).view(3, 1, 1)
        self._mean, self._std = self.mean.numpy(), self.std.numpy()

    def base(self, img) -> torch.Tensor:
        a = np.asarray(self.resize(img), dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(a.copy()).permute(2, 0, 1)  # (3, H, W) uint8

    def augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.pad:
            p, (_, h, w) = self.pad, x.shape
            padded = torch.zeros(3, h + 2 * p, w + 2 * p, dtype=x.dtype)
            padded[:, p : p + h, p : p + w] = x
            i, j = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
            x = padded[:, i : i + h, j : j + w]
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x / 255 - mean) / std in float32, computed by numpy: the same IEEE operations as torch's (equal to
        the bit), but single-threaded. torch would spread each per-image op over its intra-op threads, which on
        a loaded machine (the model training on the same cores, workers=0) made this 27 ms instead of 0.1 ms."""
        return torch.from_numpy(self.normalize_array(x.numpy()))

    def normalize_batch(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float32, in torch: one op over the batch (its threads pay off on
        a batch), the same IEEE operations in the same order as `normalize`, so the same values."""
        return x.float().div_(255.0).sub_(self.mean).div_(self.std)

    def normalize_array(self, a: np.ndarray) -> np.ndarray:
        """uint8 (..., 3, H, W) -> normalised float32: one image or a batch, the same values."""
        return (a.astype(np.float32) / np.float32(255.0) - self._mean) / self._std

    def __call__(self, img, rng: np.random.Generator | None = None) -> torch.Tensor:
        x = self.base(img)
        if self.train:
            x = self.augment(x, rng if rng is not None else np.random.default_rng())
        return self.normalize(x)


def build_transform(pre: Preprocess, train: bool, pad: int = 10, flip: bool = True) -> ImageTransform:
    """Train: resize (or letterbox), pad + random crop, flip; eval: resize only. Then normalise."""
    return ImageTransform(pre, train, pad, flip)


def describe(pre: Preprocess, train: bool, pad: int = 0, flip: bool = False) -> str:
    """A stable description of a transform, for cache keys and run records."""
    aug = f"pad{pad}-flip{int(flip)}" if train else "eval"
    box = "-letterbox" if pre.letterbox else ""
    return f"{pre.size}-{pre.interpolation}{box}-{pre.mean}/{pre.std}-{aug}"
