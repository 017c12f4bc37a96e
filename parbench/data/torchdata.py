"""torch Dataset over a PARDataset split: decodes images, crops boxes (WIDER), applies a transform."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from parbench.data.dataset import PARDataset
from parbench.errors import ParbenchError


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB 8-bit. 16-bit and float greyscale images are scaled to their full range first: PIL's own convert
    clips them at 255, which turns an ordinary 16-bit PNG white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0) if img.mode != "F" else 1.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8))  # 2-D uint8: mode L
    return img.convert("RGB")


def crop_box(img: Image.Image, box, path: str, origin: str | None = None, root: str = "") -> Image.Image:
    """Crop a person box (x, y, w, h) clipped to the image; a box that misses the image is an error, never a
    silent whole-scene crop. It names the annotation file and the target (`origin`, "file.json images[i].
    targets[j]" under `root`) where the reader says where the box is written: that is where the fix goes."""
    x, y, w, h = (float(v) for v in box)
    W, H = img.size
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise ParbenchError(path, "a person box with finite x, y and positive w, h", f"{[x, y, w, h]}")
    left, top, right, bottom = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
    if right - left < 1 or bottom - top < 1:
        if origin is None:
            raise ParbenchError(path, f"a person box inside the {W}x{H} image", f"{[x, y, w, h]}")
        annotation, _, target = origin.partition(" ")
        expected = f"{target}: a person box inside the {W}x{H} image {path}"
        raise ParbenchError(os.path.join(root, annotation), expected, f"bbox {[x, y, w, h]}")
    return img.crop(tuple(int(round(v)) for v in (left, top, right, bottom)))


def load_image(ds: PARDataset, i: int) -> Image.Image:
    path = os.path.join(str(ds.root), ds.relpaths[i])
    try:
        with Image.open(path) as raw:
            img = to_rgb(raw)
    except (OSError, Image.DecompressionBombError, ValueError) as e:
        raise ParbenchError(path, "a readable image", f"{type(e).__name__}: {e}") from None
    if ds.boxes is not None:
        img = crop_box(img, ds.boxes[i], path, ds.box_origins[i] if ds.box_origins else None, str(ds.root))
    return img


class ImageSplit(torch.utils.data.Dataset):
    """Samples of one split through an `ImageTransform`.

    With `cache` (an `ImageCache`, see data/image_cache.py), each image's deterministic part (decode, crop,
    resize: uint8) is read from the shared memory-mapped cache, written there by whichever process decoded it
    first, so later epochs, workers and runs only augment and normalise. With `aug_seed`, each sample's
    augmentation draws from its own generator seeded by (aug_seed, epoch, image index): the same image gets the
    same crop and flip in an epoch whatever the batch order, the number of loader workers or of processes (DDP).
    """

    takes_epoch = True  # training batches come as (position, epoch): see engine.dist.EpochBatches

    def __init__(self, ds: PARDataset, indices: np.ndarray, transform, cache=None, aug_seed: int | None = None):
        self.ds, self.indices, self.transform = ds, np.asarray(indices, dtype=np.int64), transform
        self.cache = cache
        self.aug_seed = aug_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def _sample(self, k) -> tuple[torch.Tensor, int]:
        """(the image as uint8 (3, H, W) after the deterministic part and its augmentation, dataset index)."""
        epoch = self.epoch
        if isinstance(k, tuple):
            k, epoch = k
        k = int(k)
        i = int(self.indices[k])
        x = self.cache.get(k) if self.cache is not None else None
        if x is None:
            x = self.transform.base(load_image(self.ds, i))
            if self.cache is not None:
                self.cache.put(k, x)
        if self.transform.train:
            seed = None if self.aug_seed is None else (self.aug_seed, epoch, i)
            x = self.transform.augment(x, np.random.default_rng(seed))
        return x, i

    def __getitem__(self, k):
        """k: a position in the split, or (position, epoch) from `EpochBatches` (the epoch that seeds the
        augmentation; a loader whose workers persist across epochs cannot set `self.epoch` in them)."""
        x, i = self._sample(k)
        return self.transform.normalize(x), torch.from_numpy(self.ds.labels[i].astype(np.int64)), i

    def __getitems__(self, ks: list) -> list:
        """A whole batch at once: each image decoded (or read from the cache) and augmented on its own, then one
        normalisation of the stacked batch, the same values as image by image (one large op instead of many
        small ones, which torch would each spread over its threads); a fully cached evaluation batch is one
        gather from the cache. `collate` passes the result through."""
        if not ks:
            return []
        rows = None
        if not self.transform.train and self.cache is not None and not isinstance(ks[0], tuple):
            rows = self.cache.rows_if_filled(np.asarray(ks, dtype=np.int64))
        if rows is not None:
            idx = self.indices[np.asarray(ks, dtype=np.int64)]
            x = torch.from_numpy(rows)
        else:
            samples = [self._sample(k) for k in ks]
            idx = np.asarray([i for _, i in samples], dtype=np.int64)
            x = torch.stack([s for s, _ in samples])
        x = self.transform.normalize_batch(x)
        return [_Batch(x, torch.from_numpy(self.ds.labels[idx].astype(np.int64)), torch.from_numpy(idx))]


class _Batch(tuple):
    """A batch already collated by `ImageSplit.__getitems__`: a loader over an `ImageSplit` takes
    `collate_fn=collate` (parbench's loaders do)."""

    def __new__(cls, *parts):
        return super().__new__(cls, parts)


def collate(samples: list):
    """default_collate, except for a batch `ImageSplit.__getitems__` built whole."""
    if len(samples) == 1 and isinstance(samples[0], _Batch):
        return list(samples[0])
    return torch.utils.data.default_collate(samples)
