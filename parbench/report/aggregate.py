"""Runs -> leaderboard rows. A row is one *configuration*: runs whose resolved identity is equal except for the
seed (`group_key`). Runs that differ in any setting, data or weights are never averaged together; each row
says which settings set it apart from the other rows of its method, so an ablation reads as labelled rows.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from parbench.metrics import HEADLINE

# identity keys that are the same for every row of a table, or shown in their own column
_NOT_A_SETTING = {
    "dataset",
    "card_sha256",
    "data_sha256",
    "method",
    "seed",
    "bootstrap",
    "device",
    "num_workers",
    "cache_images",
    "amp",
    "grad_checkpointing",
    "eval_batch_size",
    "logger",
}


def short_weights(rec: dict) -> str:
    """A tag as is, a file by name and content-hash prefix, the tiny synthetic weights and random weights by
    what they are. The full path goes in a tooltip, never in the column."""
    pre = str(rec.get("pretrained") or "")
    if pre == "none":
        return "random (per seed)"
    if "/" in pre or pre.endswith((".pt", ".pth", ".bin", ".safetensors")):
        name = Path(pre).name
        if name.startswith("parbench-tiny-synthetic"):
            return "synthetic (tiny pretraining)"
        sha = rec.get("weights_sha256", "")
        return f"{name} ({sha[:8]})" if sha else name
    return pre


def settings_of(rec: dict) -> dict[str, Any]:
    """The configuration as flat settings: weights, data choices, every resolved training and method option."""
    ident = rec.get("identity") or {}
    out: dict[str, Any] = {
        "backbone": rec["backbone"],
        "weights": short_weights(rec),
        "activation": rec.get("activation", ""),
        "partition": rec.get("partition", 0),
    }
    if rec.get("split_file"):
        out["split_file"] = Path(rec["split_file"]).name
    if rec.get("source"):
        out["source"] = Path(rec["source"]).name
    for section in ("train", "options"):
        for k, v in (ident.get(section) or {}).items():
            if k not in _NOT_A_SETTING:
                out[k] = v
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def _group_key(rec: dict) -> str:
    return rec.get("group_key") or "|".join(str(rec.get(k)) for k in ("dataset", "method", "backbone", "pretrained"))


def configuration_rows(records: list[dict], protocol: str) -> dict[str, list[dict]]:
    """Per dataset, one row per configuration: mean and spread over its seeds under `protocol`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[_group_key(r)].append(r)
    out: dict[str, list[dict]] = defaultdict(list)
    for key, runs in groups.items():
        runs.sort(key=lambda r: r["seed"])
        first = runs[0]
        row: dict[str, Any] = {
            "key": key,
            "dataset": first["dataset"],
            "method": first["method"],
            "backbone": first["backbone"],
            "weights": short_weights(first),
            "weights_full": str(first.get("pretrained", "")),
            "activation": first.get("activation", ""),
            "seeds": [r["seed"] for r in runs],
            "runs": runs,
            "settings": settings_of(first),
        }
        for k in HEADLINE:
            vals = [r["metrics"][protocol][k] for r in runs]
            row[k], row[k + "_std"] = _mean_std(vals)
        row["identical_seeds"] = len(runs) > 1 and all(
            r["metrics"][protocol] == runs[0]["metrics"][protocol] for r in runs
        )
        for k in ("map", "mauc"):
            vals = [r.get("ranking", {}).get(k) for r in runs]
            vals = [v for v in vals if v is not None]
            row[k], row[k + "_std"] = _mean_std(vals) if vals else (None, 0.0)
        sel = {r.get("selected_on", "") for r in runs}
        cfg = (first.get("config") or {}).get("train", {})
        row.update(
            total_params=first["total_params"],
            trainable_params=first["trainable_params"],
            image_tower_params=first.get("image_tower_params", first["total_params"]),
            trainable_pct=100.0 * first["trainable_params"] / max(first["total_params"], 1),
            fit_s=float(np.mean([r.get("fit_s", 0.0) for r in runs])),
            eval_s=float(np.mean([r.get("eval_s", 0.0) for r in runs])),
            train_images_per_s=float(np.mean([r.get("train_images_per_s", 0.0) for r in runs])),
            **_eval_speed(runs),
            train_timed=first.get("train_timed", "end to end"),
            peak_mem_mb=max(r.get("peak_mem_mb", 0.0) for r in runs),
            peak_eval_mem_mb=max(r.get("peak_eval_mem_mb", 0.0) for r in runs),
            peak_mem_kind=first.get("peak_mem_kind", ""),
            device=first.get("device", ""),
            dtype=first.get("dtype", ""),
            flops=first.get("flops_per_image"),
            checkpoint_bytes=first.get("checkpoint_bytes"),
            full_checkpoint_bytes=first.get("full_checkpoint_bytes"),
            selected_on=", ".join(sorted(sel)),
            selected_on_test=any(r.get("selected_on_test") for r in runs),
            select_protocol=first.get("select_protocol", "promptpar"),
            train_split=cfg.get("train_split", "auto"),
            epochs=first.get("epochs"),
            label_ma=np.mean([r["metrics"][protocol]["label_ma"] for r in runs], axis=0).tolist(),
            label_ma_std=(
                np.std([r["metrics"][protocol]["label_ma"] for r in runs], axis=0, ddof=1).tolist()
                if len(runs) > 1
                else [0.0] * len(first["metrics"][protocol]["label_ma"])
            ),
            attributes=first["attributes"],
            groups=first.get("groups", {}),
            history=[r.get("history", []) for r in runs],
            zeroshot_fitted=_fitted(runs, protocol),
            open_vocabulary=_open_vocabulary(runs, protocol),
        )
        out[first["dataset"]].append(row)
    for rows in out.values():
        _label(rows)
        rows.sort(key=lambda r: (-r["ma"], r["label"]))
    return dict(sorted(out.items()))


def _eval_speed(runs: list[dict]) -> dict:
    """Evaluation images/s of like runs only: end to end where any run timed that (a feature method's first
    seed encodes the images; later seeds read cached features and time only the head)."""
    full = [r for r in runs if r.get("eval_timed", "end to end") == "end to end"]
    use = full or runs
    return {
        "eval_images_per_s": float(np.mean([r.get("eval_images_per_s", 0.0) for r in use])),
        "eval_timed": "end to end" if full else use[0].get("eval_timed", ""),
    }


def _open_vocabulary(runs: list[dict], protocol: str) -> dict | None:
    """Mean over seeds of a held-out-attribute run's mA on its seen and its unseen attributes."""
    ov = [r["open_vocabulary"] for r in runs if r.get("open_vocabulary")]
    if not ov:
        return None
    return {
        "heldout": ov[0]["heldout"],
        "seen_ma": float(np.mean([o[protocol]["seen"]["ma"] for o in ov])),
        "unseen_ma": float(np.mean([o[protocol]["unseen"]["ma"] for o in ov])),
    }


def _fitted(runs: list[dict], protocol: str) -> dict | None:
    """Mean over seeds of a zero-shot run's decisions at thresholds fitted on train/val (never test)."""
    fits = [r.get("zeroshot_fitted") for r in runs if r.get("zeroshot_fitted")]
    if not fits:
        return None
    out = {"fit_split": fits[0]["fit_split"]}
    for mode in ("per_attribute", "global"):
        out[mode] = {k: float(np.mean([f[mode][protocol][k] for f in fits])) for k in HEADLINE}
    return out


def _label(rows: list[dict]) -> None:
    """Each row's distinguishing settings: the ones whose values differ among the rows of its method (and
    backbone), so two rows never read the same."""
    by_method: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_method[(r["method"], r["backbone"])].append(r)
    for (method, _), group in by_method.items():
        varying = sorted(
            k for k in {k for r in group for k in r["settings"]} if len({repr(r["settings"].get(k)) for r in group}) > 1
        )
        from parbench.engine.config import LATER_DEFAULTS

        for r in group:  # a setting left out of an identity at its default reads as that default
            r["distinct"] = {k: r["settings"].get(k, LATER_DEFAULTS.get(k)) for k in varying}
            extra = " · ".join(f"{k}={_fmt(v)}" for k, v in r["distinct"].items())
            r["label"] = f"{method} ({extra})" if extra else method
    names = defaultdict(int)
    for r in rows:  # two methods' rows on different backbones: the backbone tells them apart
        names[r["label"]] += 1
    for r in rows:
        if names[r["label"]] > 1:
            r["label"] = f"{r['label']} / {r['backbone']}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v in ("", None) else str(v)


def main_table(per_dataset: dict[str, list[dict]], protocol: str) -> dict:
    """Methods x datasets from `configuration_rows`: one row per configuration across datasets (the identity
    without the data), so a method's row reads across PETA, PA100k, RAP... as a PAR paper's main table does."""
    datasets = list(per_dataset)
    rows: dict[str, dict] = {}
    for ds, ds_rows in per_dataset.items():
        for r in ds_rows:
            s = {k: v for k, v in r["settings"].items() if k not in ("partition", "split_file", "source")}
            key = repr((r["method"], sorted(s.items())))
            row = rows.setdefault(
                key, {"method": r["method"], "backbone": r["backbone"], "settings": s, "cells": {}, "label": r["label"]}
            )
            row["cells"][ds] = r
    out = list(rows.values())
    _label(out)
    _mark_best(out, datasets)
    return {"datasets": datasets, "rows": out, "protocol": protocol}


def _mark_best(rows: list[dict], datasets: list[str]) -> None:
    """rank 1 (best) and 2 (second) per (dataset, metric) column among measured rows; ties share a rank."""
    for ds in datasets:
        for k in HEADLINE:
            vals = sorted({round(r["cells"][ds][k], 6) for r in rows if ds in r["cells"]}, reverse=True)
            for r in rows:
                c = r["cells"].get(ds)
                if c is not None:
                    v = round(c[k], 6)
                    c.setdefault("rank", {})[k] = (
                        1 if vals and v == vals[0] else 2 if len(vals) > 1 and v == vals[1] else 0
                    )
