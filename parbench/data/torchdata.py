"""torch Dataset over a PARDataset split: decodes images, crops boxes (WIDER), applies a transform."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from parbench.data.dataset import PARDataset
from parbench.errors import ParbenchError


def load_image(ds: PARDataset, i: int) -> Image.Image:
    path = f"{ds.root}/{ds.relpaths[i]}"
    try:
        img = Image.open(path).convert("RGB")
    except (FileNotFoundError, OSError) as e:
        raise ParbenchError(path, "a readable image", f"{type(e).__name__}: {e}") from None
    if ds.boxes is not None:
        x, y, w, h = (float(v) for v in ds.boxes[i])
        W, H = img.size
        box = (max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h))
        if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
            img = img.crop(tuple(int(round(v)) for v in box))
    return img


class ImageSplit(torch.utils.data.Dataset):
    """Samples of one split. With `aug_seed` set, each sample's random augmentation is drawn from its own
    generator, seeded by (aug_seed, epoch, image index): the same image gets the same crop and flip in an
    epoch whatever the batch order, the number of loader workers or the number of processes (DDP)."""

    def __init__(self, ds: PARDataset, indices: np.ndarray, transform, cache: bool = False,
                 aug_seed: int | None = None):  # fmt: skip
        self.ds, self.indices, self.transform = ds, np.asarray(indices, dtype=np.int64), transform
        self._cache: dict[int, Image.Image] | None = {} if cache else None
        self.aug_seed = aug_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = int(self.indices[k])
        if self._cache is not None:
            img = self._cache.get(i)
            if img is None:
                img = self._cache[i] = load_image(self.ds, i)
        else:
            img = load_image(self.ds, i)
        if self.aug_seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.aug_seed * 1_000_003 + self.epoch * 10_007 + i) % 2**63)
                x = self.transform(img)
        return x, torch.from_numpy(self.ds.labels[i].astype(np.int64)), i
