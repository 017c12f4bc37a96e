"""Uncertainty for leaderboard rows, from the stored test predictions.

Both procedures resample the *test images* (the same draw for every run of a dataset, so comparisons stay
paired) and use every seed a configuration has:

- `row_interval`: percentile interval of a configuration's seed-mean metric. Each resample draws images with
  replacement *and* seeds with replacement and averages the metric over the drawn seeds, so the interval
  covers both test-set sampling and seed-to-seed variance (with one seed: images only).
- `paired_difference`: the difference a - b of two configurations over the seeds both have, averaged over
  those seeds, on each image resample: its mean, percentile interval and a two-sided bootstrap p-value, twice
  the smaller share of resampled differences on either side of zero (capped at 1; below 1 / n_boot it is
  reported as "< 1/n_boot", never as 0).
"""

from __future__ import annotations

import numpy as np

from parbench.metrics import bootstrap_samples


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _per_seed(store, runs: list[dict], protocol: str, idx: np.ndarray, metric: str) -> np.ndarray | None:
    """(seeds, n_boot) resampled metric per run; None if a run's predictions are missing or on other images."""
    out, labels0 = [], None
    for r in runs:
        pred = store.predictions(r["run_id"])
        if pred is None:
            return None
        probs, labels = pred
        if labels0 is None:
            labels0 = labels
        elif labels.shape != labels0.shape or not np.array_equal(labels, labels0):
            return None
        out.append(
            bootstrap_samples(labels, probs, protocol, unspecified=r.get("unspecified", "negative"), indices=idx)[
                metric
            ]
        )
    return np.stack(out)


def row_interval(
    store, row: dict, protocol: str, metrics=("ma", "f1"), n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    runs = row["runs"]
    n = runs[0].get("n_test")
    if not n:
        pred = store.predictions(runs[0]["run_id"])
        if pred is None:
            return {}
        n = len(pred[1])
    idx = _indices(n, n_boot, seed)
    pick = np.random.default_rng(seed + 1).integers(0, len(runs), size=(n_boot, len(runs)))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for m in metrics:
        per = _per_seed(store, runs, protocol, idx, m)
        if per is None:
            continue
        boot = per[pick, np.arange(n_boot)[:, None]].mean(axis=1)  # seeds drawn per resample, then averaged
        out[m] = (float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))
    return out


def paired_difference(
    store, a: dict, b: dict, protocol: str, metric: str = "ma", n_boot: int = 1000, seed: int = 0
) -> dict | None:
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    if not seeds:
        return None
    ra = [r for r in a["runs"] if r["seed"] in seeds]
    rb = [r for r in b["runs"] if r["seed"] in seeds]
    pa = store.predictions(ra[0]["run_id"])
    if pa is None:
        return None
    idx = _indices(len(pa[1]), n_boot, seed)
    da, db = _per_seed(store, ra, protocol, idx, metric), _per_seed(store, rb, protocol, idx, metric)
    if da is None or db is None or not np.array_equal(store.predictions(rb[0]["run_id"])[1], pa[1]):
        return None
    d = (da - db).mean(axis=0)  # per resample: the difference averaged over the shared seeds
    observed = float(
        np.mean([x["metrics"][protocol][metric] for x in ra]) - np.mean([x["metrics"][protocol][metric] for x in rb])
    )
    p = min(1.0, 2 * min(float((d <= 0).mean()), float((d >= 0).mean())))
    return {
        "delta": observed,
        "ci_low": float(np.percentile(d, 2.5)),
        "ci_high": float(np.percentile(d, 97.5)),
        "p_value": p,
        "p_floor": p < 1.0 / n_boot,
        "n_boot": n_boot,
        "seeds": seeds,
    }
