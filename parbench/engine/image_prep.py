"""`parbench datasets prepare --images`: fill the decoded-image cache ahead of the runs that will read it.

The cache file of a split depends on the images and on the resize a run feeds its model (size, interpolation,
letterbox), which the method and backbone decide: so the preprocessing is resolved exactly as a run resolves it
(the backbone's weights config, the method's defaults, the settings), on the meta device, without weights.
Decoding is spread over the machine's cores (loader workers, each writing its own rows of the shared file).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from parbench.data.image_cache import split_cache
from parbench.data.torchdata import ImageSplit
from parbench.data.transforms import build_transform, resolve_preprocess


def run_preprocess(spec):
    """The `Preprocess` a run of `spec` would use, resolved on the meta device (no weights read)."""
    from parbench.engine.run import plan_run
    from parbench.info import build_meta

    plan = plan_run(spec)
    model, bb = build_meta(plan.method, plan.backbone, plan.card, plan.options)
    return resolve_preprocess(bb.preprocess, plan.cfg, getattr(model, "preprocess_defaults", None)), plan


def prepare_images(spec, splits: list[str] | None = None, workers: int | None = None, progress=None) -> list[dict]:
    """Decode, crop and resize every image of the run's splits into the cache; one report row per split."""
    from parbench.engine.spec import load_data

    pre, plan = run_preprocess(spec)
    cfg = replace_cache(plan.cfg)
    ds = load_data(spec, plan.card)
    names = splits or sorted({plan.card.train_split, plan.card.test_split, *(s for s in ds.splits if s == "val")})
    workers = (
        workers
        if workers is not None
        else max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
    )
    out = []
    for name in names:
        idx = ds.partition(name)
        info: dict = {}
        cache = split_cache(ds, idx, pre, cfg, info, name)
        if cache is None:
            out.append({"split": name, "images": len(idx), "cache": info[name]})
            continue
        before = info[name]["decoded_before"]
        todo = np.flatnonzero(np.asarray(cache._flags) == 0) if before else np.arange(len(idx))
        t0 = time.perf_counter()
        if len(todo):
            split = ImageSplit(ds, idx, build_transform(pre, False), cache)
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(_Decode(split), todo.tolist()),
                batch_size=64,
                num_workers=min(workers, max(1, len(todo) // 64)),
                collate_fn=len,
            )
            task = progress.add_task(f"decoding {name}", total=len(todo)) if progress else None
            for n in loader:
                if progress:
                    progress.advance(task, n)
            if progress:
                progress.remove_task(task)
        seconds = time.perf_counter() - t0
        out.append(
            {
                "split": name,
                "images": len(idx),
                "cache": info[name]["file"],
                "decoded_before": before,
                "decoded_now": int(len(todo)),
                "images_per_s": len(todo) / seconds if len(todo) and seconds > 0 else None,
                "workers": workers,
                "size": list(pre.size),
            }
        )
    return out


def replace_cache(cfg):
    """Preparing images means caching them, whatever the source (`cache_images = "auto"` would skip plain crops)."""
    from dataclasses import replace

    return replace(cfg, cache_images="on")


class _Decode(torch.utils.data.Dataset):
    """Only the deterministic part of a sample (decode, crop, resize), written into the cache."""

    def __init__(self, split: ImageSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, k: int) -> int:
        s = self.split
        if s.cache.get(k) is None:
            from parbench.data.torchdata import load_image

            s.cache.put(k, s.transform.base(load_image(s.ds, int(s.indices[k]))))
        return 1
