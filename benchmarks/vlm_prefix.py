"""A multimodal LLM's yes/no answers per attribute: the prefix-cached path against the naive loop.

    python benchmarks/vlm_prefix.py [--backbones hf:tiny-llava,hf:tiny-smolvlm] [--dataset PA100k]
                                    [--images 32] [--batch 8] [--repeats 3] [--json F]

Both paths run parbench's own `vlm` model (baselines/vlm.py) on the same random images: `naive` runs image +
prefix + question in one forward per question (K forwards per image), `cached` runs the image and the prefix once
per batch and all questions of the batch in batched forwards on copies of that key/value cache. It prints images/s,
attribute decisions/s (images x K) and the speed-up, medians of `--repeats` passes after a warm-up, and the
largest score difference between the paths. K is the dataset card's attribute count (PA100k: 26), one question each
(the card's sentences). Any `hf:/path/to/model-folder` of a supported architecture runs the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="hf:tiny-llava,hf:tiny-smolvlm")
    ap.add_argument("--dataset", default="PA100k")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    from parbench.cards import load_card
    from parbench.engine.build import build_model
    from parbench.engine.config import resolve_config
    from parbench.methods import get_method

    spec, card = get_method("vlm"), load_card(args.dataset)
    results = {}
    for backbone in args.backbones.split(","):
        cfg, options = resolve_config(spec, {}, card.name)
        model = build_model(spec, card, cfg, options, backbone, None, 0).model
        k = card.num_attributes
        x = torch.randn(args.images, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
        batches = x.split(args.batch)
        row = {}
        with torch.no_grad():
            diff = float((model.cached(batches[0]) - model.naive(batches[0])).abs().max())
            for name, fn in (("naive", model.naive), ("cached", model.cached)):
                fn(batches[0])  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    for b in batches:
                        fn(b)
                    times.append(time.perf_counter() - t0)
                s = statistics.median(times)
                row[name] = {"images_per_s": args.images / s, "decisions_per_s": args.images * k / s}
        row["speedup"] = row["cached"]["images_per_s"] / row["naive"]["images_per_s"]
        row["max_abs_score_diff"] = diff
        row["attributes"] = k
        results[backbone] = row
        print(
            f"{backbone} K={k}: naive {row['naive']['images_per_s']:.1f} img/s ({row['naive']['decisions_per_s']:.0f}"
            f" decisions/s), cached {row['cached']['images_per_s']:.1f} img/s ({row['cached']['decisions_per_s']:.0f}"
            f" decisions/s): x{row['speedup']:.1f}; largest score difference {diff:.1e}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
