"""Frozen-feature training (linear probe): encode each split once, cache on disk, train a head on tensors.

The cache key covers everything that changes the bytes (engine/evaluate.py `feature_cache_key`): the backbone's
identity (weights content, random seed, activation), the images (paths, sizes, mtimes, boxes), the exact sample
indices and the transform; a missing, partial or corrupt file is simply recomputed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
import torch.nn as nn

from parbench.atomic import atomic_write
from parbench.data.torchdata import ImageSplit
from parbench.settings import cache_dir


class FeatureHead(nn.Module):
    """Adapts a feature method to the engine: its input is a cached feature, not an image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.head = model.head
        self.num_attributes = model.num_attributes

    def forward(self, feats: torch.Tensor) -> dict:
        return {"logits": self.head(feats)}


class FeatureSplit(torch.utils.data.TensorDataset):
    """(feature, labels, index) rows; takes the (position, epoch) items of training batches too (a feature has
    no augmentation, so the epoch is dropped)."""

    def __getitem__(self, k):
        return super().__getitem__(k[0] if isinstance(k, tuple) else k)


def feature_key(key: dict, idx: np.ndarray) -> str:
    blob = json.dumps(key, sort_keys=True, default=str) + hashlib.sha256(np.asarray(idx).tobytes()).hexdigest()
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@torch.no_grad()
def encode_split(model, ds, idx, transform, device, cfg, progress=None) -> np.ndarray:
    from parbench.engine.train import _loader_options, loader_workers

    opts = _loader_options(loader_workers(cfg.num_workers, device))
    opts["persistent_workers"] = False  # one pass
    from parbench.data.image_cache import split_cache

    cache = split_cache(ds, idx, transform.pre, cfg)
    loader = torch.utils.data.DataLoader(ImageSplit(ds, idx, transform, cache), batch_size=cfg.eval_batch_size, **opts)
    task = progress.add_task("encoding", total=len(idx)) if progress else None
    out = []
    for images, _, _ in loader:
        out.append(model.encode(images.to(device, non_blocking=True)).float().cpu().numpy())
        if progress:
            progress.advance(task, len(images))
    if progress:
        progress.remove_task(task)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def cached_features(model, ds, idx, transform, device, cfg, key: dict, progress=None, use_cache: bool = True):
    path = cache_dir() / "features" / f"{feature_key(key, idx)}.npy"
    feats, hit = None, False
    if use_cache and path.is_file():
        try:
            feats = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            feats = None
        if feats is not None and (feats.ndim != 2 or feats.shape[0] != len(idx) or not np.isfinite(feats).all()):
            feats = None
        hit = feats is not None
    if feats is None:
        feats = encode_split(model, ds, idx, transform, device, cfg, progress)
        if use_cache:

            def write(tmp: str) -> None:
                with open(tmp, "wb") as f:  # a file object: given a name, np.save would append .npy
                    np.save(f, feats)

            atomic_write(path, write)
    labels = torch.from_numpy(ds.labels[idx].astype(np.int64))
    out = FeatureSplit(torch.from_numpy(feats), labels, torch.from_numpy(np.asarray(idx)))
    out.from_cache = hit
    return out
