"""Bootstrap draws, computed once per run and stored: what intervals and paired tests are made of.

A run's *draws* are its headline metrics (mA, Acc, Prec, Rec, F1) under each protocol on `n_boot` resamples of
its test images. The resamples are a deterministic function of the test set's size, `n_boot` and the seed
(`resample_indices`), so every run on the same test images is scored on the same resamples: a configuration's
interval averages its seeds' draws, and a paired difference of two configurations is the difference of their
draws, resample by resample, with no prediction read again. Draws are stored with the test set's identity
(`test_set_sha`, the hash of its labels: equal labels, equal images in equal order, as the pairing has always
required), so draws of different test sets are never paired.

The report uses `REPORT_BOOT` resamples drawn with `REPORT_SEED`; a run stores them when it finishes, and a run
recorded before draws existed gets them computed from its stored predictions the first time it is reported.
"""

from __future__ import annotations

import hashlib

import numpy as np

from parbench.metrics import HEADLINE, PROTOCOLS, bootstrap_samples

REPORT_BOOT = 1000  # resamples behind every interval and paired test in the report
REPORT_SEED = 0


def resample_indices(n: int, n_boot: int = REPORT_BOOT, seed: int = REPORT_SEED) -> np.ndarray:
    """(n_boot, n) test-image indices drawn with replacement: the same for every run on a test set of n images."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def test_set_sha(labels: np.ndarray) -> str:
    """The identity draws are paired by: the test labels' bytes and shape (uint8)."""
    lab = np.ascontiguousarray(np.asarray(labels, dtype=np.uint8))
    return hashlib.sha256(repr(lab.shape).encode() + lab.tobytes()).hexdigest()[:16]


def compute_draws(
    labels: np.ndarray,
    probs: np.ndarray,
    unspecified: str = "negative",
    n_boot: int = REPORT_BOOT,
    seed: int = REPORT_SEED,
    chunk: int = 250,
) -> dict[str, np.ndarray]:
    """Protocol -> (n_boot, 5) float64 headline metrics (HEADLINE order) on each resample. Resamples are scored
    `chunk` at a time, so memory stays at chunk x N counts whatever n_boot is (a 60,000-image test set)."""
    idx = resample_indices(len(labels), n_boot, seed)
    out = {}
    for proto in PROTOCOLS:
        parts = []
        for lo in range(0, n_boot, chunk):
            s = bootstrap_samples(labels, probs, proto, unspecified=unspecified, indices=idx[lo : lo + chunk])
            parts.append(np.stack([s[k] for k in HEADLINE], axis=1))
        out[proto] = np.concatenate(parts) if parts else np.zeros((0, len(HEADLINE)))
    return out


def intervals(draws: dict[str, np.ndarray], level: float = 0.95) -> dict[str, dict[str, tuple[float, float]]]:
    """Protocol -> metric -> percentile interval, from one run's draws."""
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {
        proto: {
            k: (float(np.percentile(d[:, j], lo)), float(np.percentile(d[:, j], hi))) for j, k in enumerate(HEADLINE)
        }
        for proto, d in draws.items()
    }
