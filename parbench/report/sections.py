"""The zero-shot track's report sections, built from the leaderboard's configuration rows (no store read):

- prompt sensitivity: for each zero-shot model (method, backbone, weights), mA under each prompt set it was run
  with (the card's sentences, the prompts file's sets, their ensemble) and the spread between the best and worst;
- foundation models: per dataset and image tower, what it does before any training (zero-shot mA, on the
  ensemble of prompts where it was run, else the card's) beside a linear probe of the same tower, with the
  tower's parameters, FLOPs and evaluation images/s;
- open vocabulary: runs that held attributes out of training, their mA on the seen and on the unseen ones.
"""

from __future__ import annotations

from collections import defaultdict

ZERO_SHOT = ("zeroshot", "vlm")  # methods that decide from text, with prompt sets
PREFERRED_SET = ("ensemble", "card")  # which prompt set stands for a model in the foundation table


def _tower(r: dict) -> tuple[str, str]:
    return r["backbone"], r["weights"]


def prompt_sensitivity(per_dataset: dict[str, list[dict]]) -> list[dict]:
    """Per dataset, one row per zero-shot model: {set: mA} and the spread (best - worst) over its sets."""
    out = []
    for ds, rows in per_dataset.items():
        models: dict[tuple, dict] = defaultdict(dict)
        for r in rows:
            if r["method"] in ZERO_SHOT and "prompt_set" in r["settings"]:
                models[(r["method"], *_tower(r))][r["settings"]["prompt_set"]] = r
        if not models:
            continue
        sets = sorted({s for m in models.values() for s in m}, key=lambda s: (s == "ensemble", s != "card", s))
        table = []
        for (method, backbone, weights), by_set in sorted(models.items()):
            mas = [r["ma"] for r in by_set.values()]
            table.append(
                {
                    "model": f"{method} / {backbone} ({weights})",
                    "cells": {s: by_set[s]["ma"] for s in by_set},
                    "spread": max(mas) - min(mas) if len(mas) > 1 else None,
                }
            )
        out.append({"dataset": ds, "sets": sets, "rows": table})
    return out


def foundation(per_dataset: dict[str, list[dict]]) -> list[dict]:
    """Per dataset, one row per image tower that was run zero-shot or linearly probed."""
    out = []
    for ds, rows in per_dataset.items():
        towers: dict[tuple, dict] = defaultdict(dict)
        for r in rows:
            if r["method"] == "linear-probe":
                best = towers[_tower(r)].get("probe")
                if best is None or r["ma"] > best["ma"]:
                    towers[_tower(r)]["probe"] = r
            elif r["method"] in ZERO_SHOT:
                have = towers[_tower(r)].get("zero")
                rank = _set_rank(r)
                if have is None or rank < _set_rank(have):
                    towers[_tower(r)]["zero"] = r
        if not towers:
            continue
        table = []
        for (backbone, weights), got in sorted(towers.items()):
            any_row = got.get("probe") or got["zero"]
            table.append(
                {
                    "backbone": backbone,
                    "weights": weights,
                    "zero_shot": got.get("zero"),
                    "prompt_set": got["zero"]["settings"].get("prompt_set") if got.get("zero") else None,
                    "probe": got.get("probe"),
                    "tower_params": any_row.get("image_tower_params"),
                    "flops": any_row.get("flops"),
                    "eval_images_per_s": any_row.get("eval_images_per_s"),
                }
            )
        out.append({"dataset": ds, "rows": sorted(table, key=lambda t: -max(_ma(t["zero_shot"]), _ma(t["probe"])))})
    return out


def _set_rank(r: dict) -> int:
    s = r["settings"].get("prompt_set", "card")
    return PREFERRED_SET.index(s) if s in PREFERRED_SET else len(PREFERRED_SET)


def _ma(r: dict | None) -> float:
    return r["ma"] if r else -1.0


def open_vocabulary(per_dataset: dict[str, list[dict]]) -> list[dict]:
    """Rows of runs that held attributes out of training: mA on the seen and on the unseen attributes."""
    out = []
    for ds, rows in per_dataset.items():
        table = [r for r in rows if r.get("open_vocabulary")]
        if table:
            out.append({"dataset": ds, "rows": table})
    return out
