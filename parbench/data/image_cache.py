"""The decoded-image cache: a split's images, decoded, cropped (WIDER's person boxes) and resized once, kept as
one memory-mapped uint8 file that every loader worker and every later run reads instead of the JPEGs.

What a source costs before the model sees it is mostly decoding: a WIDER target decodes its whole 1024 x 683
scene to crop one person, about 90 images/s per core. The cache holds exactly `ImageTransform.base(image)` (the
deterministic decode + crop + resize, uint8 (3, H, W)); augmentation and normalisation still run per sample, so
a cached run computes on the same pixels as an uncached one (tests/test_data_path.py checks the numbers).

One file per (images, boxes, resize): its name is a digest of each image's path, size and modification time,
the boxes, and the resize (size, interpolation, letterbox), so an image replaced in place or another input size
is another file, never a stale hit. The file starts with one flag byte per image, then the pixels; a row's
flag is set after its pixels are written, by whichever process decoded it first (workers write disjoint rows
of one shared mapping). The folder is bounded (`cache_images_gb`): the least recently used files go first, and a
split that alone exceeds the bound is not cached (the run says so).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from parbench.data.dataset import PARDataset
from parbench.settings import cache_dir

VERSION = 1


def images_stamp(ds: PARDataset, idx: np.ndarray) -> str:
    """Digest of (path, size, mtime) of the images behind `idx` and their boxes: a stat per image, not a read
    (milliseconds for 10,000 images)."""
    h = hashlib.sha256()
    root = str(ds.root)
    for i in np.asarray(idx).tolist():
        rel = ds.relpaths[i]
        try:
            st = os.stat(f"{root}/{rel}")
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{rel}:-;".encode())
    if ds.boxes is not None:
        h.update(np.ascontiguousarray(ds.boxes[idx]).tobytes())
    return h.hexdigest()


def cache_key(ds: PARDataset, idx: np.ndarray, pre) -> str:
    blob = f"{VERSION}|{ds.root}|{images_stamp(ds, idx)}|{tuple(pre.size)}|{pre.interpolation}|{bool(pre.letterbox)}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def wants_cache(setting: str, ds: PARDataset, pre) -> bool:
    """`cache_images`: "on", "off", or "auto" = on where decoding costs more than it must: boxed sources
    (WIDER's scenes) and letterboxed ones."""
    if setting == "auto":
        return ds.boxes is not None or bool(pre.letterbox)
    return setting == "on"


class ImageCache:
    """(N, 3, H, W) uint8 rows behind N flags, in one file; opened lazily in each process that reads it."""

    def __init__(self, path: Path, n: int, shape: tuple[int, int, int]):
        self.path, self.n, self.shape = Path(path), n, tuple(shape)
        self._pid, self._flags, self._rows = None, None, None

    @property
    def nbytes(self) -> int:
        return self.n + self.n * int(np.prod(self.shape))

    def _open(self) -> None:
        if self._pid == os.getpid():
            return
        if not self.path.is_file() or self.path.stat().st_size != self.nbytes:
            self._create()
        self._flags = np.memmap(self.path, np.uint8, "r+", 0, (self.n,))
        self._rows = np.memmap(self.path, np.uint8, "r+", self.n, (self.n, *self.shape))
        self._pid = os.getpid()

    def _create(self) -> None:
        """A zero-filled (sparse) file of the full size, renamed into place: readers never see a short file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.truncate(self.nbytes)
        os.replace(tmp, self.path)

    def filled(self) -> int:
        self._open()
        return int(np.count_nonzero(self._flags))

    def get(self, k: int) -> torch.Tensor | None:
        self._open()
        if not self._flags[k]:
            return None
        return torch.from_numpy(np.array(self._rows[k]))

    def rows_if_filled(self, ks: np.ndarray) -> np.ndarray | None:
        """The rows of positions `ks` (one gather, a copy), or None unless every one is filled."""
        self._open()
        if not self._flags[ks].all():
            return None
        return np.asarray(self._rows[ks])

    def put(self, k: int, x: torch.Tensor) -> None:
        self._open()
        self._rows[k] = x.numpy()
        self._flags[k] = 1

    def __getstate__(self) -> dict:  # a worker process reopens the file; mappings are not sent
        return {"path": self.path, "n": self.n, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["n"], state["shape"])


def open_cache(ds: PARDataset, idx: np.ndarray, pre, bound_gb: float) -> tuple[ImageCache | None, str]:
    """The split's cache file, made room for within the bound; (None, why) when the split alone exceeds it."""
    h, w = tuple(pre.size)
    folder = cache_dir() / "images"
    cache = ImageCache(folder / f"{cache_key(ds, idx, pre)}.u8", len(idx), (3, h, w))
    bound = int(bound_gb * 2**30)
    if cache.nbytes > bound:
        return None, f"not cached: {cache.nbytes / 2**30:.1f} GiB over the {bound_gb:g} GiB bound (cache_images_gb)"
    _make_room(folder, cache.path, cache.nbytes, bound)
    if cache.path.is_file():
        os.utime(cache.path)  # least recently used goes first
    return cache, str(cache.path)


def _make_room(folder: Path, keep: Path, need: int, bound: int) -> None:
    if not folder.is_dir():
        return
    files = sorted((p for p in folder.glob("*.u8") if p != keep), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files) + need
    for p in files:
        if total <= bound:
            break
        total -= p.stat().st_size
        p.unlink(missing_ok=True)


def split_cache(ds: PARDataset, idx: np.ndarray, pre, cfg, info: dict | None = None, name: str = "split"):
    """The split's cache under the run's settings (`cache_images`, `cache_images_gb`), or None; what was used goes
    into `info[name]` (the cache file and how many of its images were already decoded, or why none)."""
    if not wants_cache(cfg.cache_images, ds, pre):
        if info is not None:
            info[name] = "off"
        return None
    cache, where = open_cache(ds, idx, pre, cfg.cache_images_gb)
    if info is not None:
        info[name] = {"file": where, "images": len(idx), "decoded_before": cache.filled()} if cache else where
    return cache
