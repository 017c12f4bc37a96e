"""Uncertainty for leaderboard rows, from the runs' stored bootstrap draws (`parbench.draws`): no prediction is
read, nothing is resampled here; every operation is on arrays of n_boot numbers per run.

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

from parbench.metrics import HEADLINE

# run id -> (test set identity, protocol -> (n_boot, 5) draws): `Store.ensure_draws`
Draws = dict[str, tuple[str, dict[str, np.ndarray]]]


def _per_seed(draws: Draws, runs: list[dict], protocol: str, metric: str) -> np.ndarray | None:
    """(seeds, n_boot) resampled metric per run; None if a run has no draws or they are of another test set."""
    got = [draws.get(r["run_id"]) for r in runs]
    if any(g is None or protocol not in g[1] for g in got) or len({g[0] for g in got}) != 1:
        return None
    j = HEADLINE.index(metric)
    return np.stack([g[1][protocol][:, j] for g in got])


def row_interval(
    draws: Draws, row: dict, protocol: str, metrics=("ma", "f1"), seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    runs = row["runs"]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for m in metrics:
        per = _per_seed(draws, runs, protocol, m)
        if per is None:
            continue
        n_boot = per.shape[1]
        pick = np.random.default_rng(seed + 1).integers(0, len(runs), size=(n_boot, len(runs)))
        boot = per[pick, np.arange(n_boot)[:, None]].mean(axis=1)  # seeds drawn per resample, then averaged
        out[m] = (float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))
    return out


def paired_difference(draws: Draws, a: dict, b: dict, protocol: str, metric: str = "ma") -> dict | None:
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    if not seeds:
        return None
    ra = [r for r in a["runs"] if r["seed"] in seeds]
    rb = [r for r in b["runs"] if r["seed"] in seeds]
    both = _per_seed(draws, ra + rb, protocol, metric)  # one test set for all of them, or no pairing
    if both is None:
        return None
    da, db = both[: len(ra)], both[len(ra) :]
    n_boot = both.shape[1]
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
