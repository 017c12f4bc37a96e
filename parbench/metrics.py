"""Pedestrian-attribute metrics and the two community protocols (pure numpy).

Definitions follow the reference code exactly (see shared/reference/metrics.md): label-based mA, instance-based
Acc (Jaccard), Prec, Rec and F1, eps = 1e-20 added to denominators only, and a strict `>` threshold.

Protocols fix what differs between communities:
- `promptpar` (PromptPAR / VTB): threshold 0.45, F1 = mean of per-sample F1.
- `rethinking` (Rethinking_of_PAR): threshold 0.5, F1 = harmonic mean of the mean Prec and mean Rec.

Labels are canonical uint8: 0 negative, 1 positive, 255 unspecified/uncertain. What 255 means for scoring is
the `unspecified` option:
- "negative" (default, the Rethinking loader's 2 -> 0 and PromptPAR's WIDER merge): counted as a negative;
- "ignore": excluded from the per-attribute counts and from both instance sets (prediction and truth);
- "stored": what the reference metric code does with a raw value other than 0/1 (RAP's 2 kept by PromptPAR):
  neither positive nor negative for mA, not in the true set, but a positive prediction on it still enlarges
  the predicted set and the union.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED

EPS = 1e-20
HEADLINE = ("ma", "acc", "prec", "rec", "f1")
UNSPECIFIED_MODES = ("negative", "ignore", "stored")


@dataclass(frozen=True)
class Protocol:
    name: str
    threshold: float
    f1: str  # "mean_sample" (mean of per-sample F1) or "harmonic" (2PR/(P+R) of the means)
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "promptpar": Protocol("promptpar", 0.45, "mean_sample", "PromptPAR/VTB: tau=0.45, F1 = mean per-sample F1"),
    "rethinking": Protocol(
        "rethinking", 0.5, "harmonic", "Rethinking_of_PAR: tau=0.5, F1 = 2*Prec*Rec/(Prec+Rec) of the means"
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ParbenchError(None, f"a protocol among {', '.join(PROTOCOLS)}", f"'{name}'")
    return PROTOCOLS[name]


@dataclass
class PedestrianMetrics:
    """Headline values are fractions in [0, 1]; per-attribute arrays have one entry per evaluated attribute."""

    ma: float
    acc: float
    prec: float
    rec: float
    f1: float
    protocol: str
    threshold: float
    unspecified: str
    label_ma: np.ndarray = field(repr=False)
    label_pos_recall: np.ndarray = field(repr=False)
    label_neg_recall: np.ndarray = field(repr=False)
    label_prec: np.ndarray = field(repr=False)
    label_f1: np.ndarray = field(repr=False)
    label_acc: np.ndarray = field(repr=False)

    def headline(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in HEADLINE}

    def to_dict(self) -> dict:
        out: dict = self.headline()
        out.update(protocol=self.protocol, threshold=float(self.threshold), unspecified=self.unspecified)
        return out


def check_predictions(
    labels: np.ndarray,
    probs: np.ndarray,
    unspecified: str = "negative",
    names: tuple[str, str] = ("labels", "probs"),
) -> tuple[np.ndarray, np.ndarray]:
    """Two N x K arrays: labels 0 / 1 / 255 (RAP's raw 2 is 255 in parbench's labels; under "stored", the mode
    that scores labels as the reference pickles store them, a raw 2 is taken as it is), probabilities finite in
    [0, 1] (sigmoid outputs, not logits), at least one sample and one attribute. Anything else is an error that
    says what was found: NaN counted as a negative would score a diverged model as chance. `names` says where
    each array came from (the files `parbench score` read), so the error points at the file to fix."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    lname, pname = names
    both = f"{lname} and {pname}" if names != ("labels", "probs") else "labels/probs"
    if labels.ndim != 2 or probs.shape != labels.shape:
        raise ParbenchError(both, "two N x K arrays of the same shape", f"{labels.shape} and {probs.shape}")
    if labels.size == 0:
        raise ParbenchError(both, "at least one sample and one attribute", f"shape {labels.shape}")
    for name, arr in ((lname, labels), (pname, probs)):
        if arr.dtype.kind not in "biuf":
            raise ParbenchError(name, "a numeric array", f"dtype {arr.dtype}")
    values = np.unique(labels)
    allowed = (0, 1, UNSPECIFIED, 2) if unspecified == "stored" else (0, 1, UNSPECIFIED)
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        raise ParbenchError(
            lname,
            "labels 0, 1 and 255 (unspecified; RAP's raw 2 is 255 here)",
            f"{', '.join(f'{v:g}' for v in bad[:5].astype(float))}",
        )
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all():
        raise ParbenchError(pname, "finite probabilities", f"{int((~np.isfinite(probs)).sum())} NaN or infinite values")
    if probs.min() < 0 or probs.max() > 1:
        raise ParbenchError(
            pname,
            "probabilities in [0, 1] (apply a sigmoid to logits)",
            f"values from {probs.min():g} to {probs.max():g}",
        )
    return labels.astype(np.int64), probs


def _threshold(proto: Protocol, threshold) -> float | np.ndarray:
    """The protocol's threshold, or a given one: a number, or one per attribute (a K-vector), in [0, 1]."""
    if threshold is None:
        return proto.threshold
    tau = np.asarray(threshold, dtype=np.float64)
    if tau.ndim > 1 or not np.isfinite(tau).all() or (tau < 0).any() or (tau > 1).any():
        raise ParbenchError("threshold", "a number in [0, 1] (or one per attribute)", repr(threshold))
    return float(tau) if tau.ndim == 0 else tau


def _masks(labels: np.ndarray, unspecified: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is_positive, is_negative, counts_in_prediction) boolean masks, N x K."""
    if unspecified not in UNSPECIFIED_MODES:
        raise ParbenchError(None, f"unspecified handling among {', '.join(UNSPECIFIED_MODES)}", unspecified)
    pos = labels == 1
    neg = labels == 0
    other = ~(pos | neg)
    if unspecified == "negative":
        return pos, neg | other, np.ones_like(pos)
    if unspecified == "ignore":
        return pos, neg, ~other
    return pos, neg, np.ones_like(pos)  # "stored"


def per_sample(labels: np.ndarray, pred: np.ndarray, unspecified: str = "negative") -> dict[str, np.ndarray]:
    """Per-sample instance quantities and per-element label indicators (used by bootstrap too)."""
    pos, neg, valid = _masks(labels, unspecified)
    pred = pred & valid
    inter = (pos & pred).sum(1).astype(np.float64)
    union = (pos | pred).sum(1).astype(np.float64)
    n_pred = pred.sum(1).astype(np.float64)
    n_true = pos.sum(1).astype(np.float64)
    prec_i = inter / (n_pred + EPS)
    rec_i = inter / (n_true + EPS)
    return {
        "acc": inter / (union + EPS),
        "prec": prec_i,
        "rec": rec_i,
        "f1": 2 * prec_i * rec_i / (prec_i + rec_i + EPS),
        "tp": (pos & pred).astype(np.float64),
        "tn": (neg & ~pred).astype(np.float64),
        "fp": (neg & pred).astype(np.float64),
        "pos": pos.astype(np.float64),
        "neg": neg.astype(np.float64),
    }


def _label_metrics(tp, tn, fp, pos, neg) -> dict[str, np.ndarray]:
    """Per-attribute metrics from count vectors (last axis = attributes)."""
    fn = pos - tp
    pos_recall = tp / (pos + EPS)
    neg_recall = tn / (neg + EPS)
    prec = tp / (tp + fp + EPS)
    return {
        "label_ma": (pos_recall + neg_recall) / 2,
        "label_pos_recall": pos_recall,
        "label_neg_recall": neg_recall,
        "label_prec": prec,
        "label_acc": tp / (tp + fp + fn + EPS),
        "label_f1": 2 * prec * pos_recall / (prec + pos_recall + EPS),
    }


def _f1(protocol: Protocol, prec: np.ndarray, rec: np.ndarray, f1_mean: np.ndarray) -> np.ndarray:
    if protocol.f1 == "harmonic":
        return 2 * prec * rec / (prec + rec + EPS)
    return f1_mean


def pedestrian_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    protocol: str = "promptpar",
    threshold: float | None = None,
    unspecified: str = "negative",
) -> PedestrianMetrics:
    """Score N x K probabilities against N x K labels under a named protocol."""
    labels, probs = check_predictions(labels, probs, unspecified)
    proto = get_protocol(protocol)
    tau = _threshold(proto, threshold)
    s = per_sample(labels, probs > tau, unspecified)
    lab = _label_metrics(s["tp"].sum(0), s["tn"].sum(0), s["fp"].sum(0), s["pos"].sum(0), s["neg"].sum(0))
    prec, rec = s["prec"].mean(), s["rec"].mean()
    return PedestrianMetrics(
        ma=float(lab["label_ma"].mean()),
        acc=float(s["acc"].mean()),
        prec=float(prec),
        rec=float(rec),
        f1=float(_f1(proto, prec, rec, s["f1"].mean())),
        protocol=proto.name,
        threshold=tau if np.ndim(tau) == 0 else float("nan"),
        unspecified=unspecified,
        **lab,
    )


def bootstrap_samples(
    labels: np.ndarray,
    probs: np.ndarray,
    protocol: str = "promptpar",
    threshold: float | None = None,
    unspecified: str = "negative",
    n_boot: int = 1000,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Headline metrics on `n_boot` resamples of the test samples (with replacement), vectorised.

    Pass the same `indices` (n_boot x N) for two methods on the same images to get a paired bootstrap.
    """
    labels, probs = check_predictions(labels, probs, unspecified)
    proto = get_protocol(protocol)
    tau = _threshold(proto, threshold)
    n = labels.shape[0]
    if indices is None:
        indices = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    s = per_sample(labels, probs > tau, unspecified)
    # multiplicity of each sample in each resample: (n_boot, N)
    b = indices.shape[0]
    flat = (indices + n * np.arange(b)[:, None]).ravel()  # one bincount for all resamples (np.add.at is slow)
    counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
    lab = _label_metrics(*(counts @ s[k] for k in ("tp", "tn", "fp", "pos", "neg")))
    out = {"ma": lab["label_ma"].mean(1)}
    for k in ("acc", "prec", "rec", "f1"):
        out[k] = (counts @ s[k]) / n
    out["f1"] = _f1(proto, out["prec"], out["rec"], out["f1"])
    return out


def protocol_metrics(labels: np.ndarray, probs: np.ndarray, unspecified: str = "negative") -> dict[str, dict]:
    """Headline metrics, threshold and per-attribute mA under every protocol: what run records hold."""
    out = {}
    for name in PROTOCOLS:
        m = pedestrian_metrics(labels, probs, name, unspecified=unspecified)
        out[name] = {**m.headline(), "threshold": m.threshold, "label_ma": m.label_ma.tolist()}
    return out


def per_domain_metrics(
    labels: np.ndarray, probs: np.ndarray, domains: list[str], unspecified: str = "negative"
) -> dict[str, dict]:
    """Headline metrics per protocol for each domain's images (UPAR's per-source test lists, MSP60K's scenes):
    {domain: {"n": images, protocol: headline}}, domains in order of first appearance."""
    dom = np.asarray(domains)
    out = {}
    for d in dict.fromkeys(domains):
        sel = dom == d
        out[str(d)] = {
            "n": int(sel.sum()),
            **{
                p: pedestrian_metrics(labels[sel], probs[sel], p, unspecified=unspecified).headline() for p in PROTOCOLS
            },
        }
    return out


def bootstrap_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    protocol: str = "promptpar",
    threshold: float | None = None,
    unspecified: str = "negative",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (default 95%) for every headline metric."""
    boot = bootstrap_samples(labels, probs, protocol, threshold, unspecified, n_boot, seed)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in boot.items()}


def paired_bootstrap(
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    metric: str = "ma",
    protocol: str = "promptpar",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of the difference a - b on the same test images: mean delta, 95% CI and the
    one-sided p-value that a is not better than b (fraction of resamples with delta <= 0)."""
    n = np.asarray(labels).shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    a = bootstrap_samples(labels, probs_a, protocol, indices=idx)[metric]
    b = bootstrap_samples(labels, probs_b, protocol, indices=idx)[metric]
    d = a - b
    return {
        "delta": float(d.mean()),
        "ci_low": float(np.percentile(d, 2.5)),
        "ci_high": float(np.percentile(d, 97.5)),
        "p_value": float((d <= 0).mean()),
    }


def _valid_mask(labels: np.ndarray, unspecified: str) -> np.ndarray:
    """Elements that carry a 0/1 truth for ranking metrics: 255 counts as negative under "negative", and is
    left out under "ignore" and "stored" (a ranking has no place for a value that is neither)."""
    if unspecified not in UNSPECIFIED_MODES:
        raise ParbenchError(None, f"unspecified handling among {', '.join(UNSPECIFIED_MODES)}", unspecified)
    return np.ones(labels.shape, bool) if unspecified == "negative" else (labels == 0) | (labels == 1)


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall steps over distinct score thresholds, high to low: sum over thresholds
    of (R_n - R_{n-1}) * P_n, no interpolation (scikit-learn's `average_precision_score`). NaN without positives."""
    truth = np.asarray(truth, bool)
    if not truth.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    s, y = np.asarray(scores, np.float64)[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the probability that a positive outscores a negative (ties count half):
    the Mann-Whitney statistic from average ranks. NaN without both classes."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ranking_metrics(labels: np.ndarray, probs: np.ndarray, unspecified: str = "negative") -> dict:
    """Threshold-free metrics: per-attribute AP and AUROC, and their macro means (mAP, mAUC) over the
    attributes where they are defined (the counts say how many)."""
    labels, probs = check_predictions(labels, probs, unspecified)
    valid = _valid_mask(labels, unspecified)
    ap, auc = [], []
    for j in range(labels.shape[1]):
        v = valid[:, j]
        truth, scores = labels[v, j] == 1, probs[v, j]
        ap.append(average_precision(truth, scores))
        auc.append(roc_auc(truth, scores))
    ap_a, auc_a = np.asarray(ap), np.asarray(auc)
    return {
        "map": float(np.nanmean(ap_a)) if np.isfinite(ap_a).any() else None,
        "mauc": float(np.nanmean(auc_a)) if np.isfinite(auc_a).any() else None,
        "n_ap": int(np.isfinite(ap_a).sum()),
        "n_auc": int(np.isfinite(auc_a).sum()),
        "label_ap": [None if not np.isfinite(x) else float(x) for x in ap_a],
        "label_auc": [None if not np.isfinite(x) else float(x) for x in auc_a],
    }


def _ma_at(pos_sorted: np.ndarray, neg_sorted: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(TPR + TNR) / 2 at thresholds t (prediction = p > t), from each class's sorted scores."""
    tpr = 1.0 - np.searchsorted(pos_sorted, t, side="right") / pos_sorted.size
    tnr = np.searchsorted(neg_sorted, t, side="right") / neg_sorted.size
    return (tpr + tnr) / 2


def fit_thresholds(
    labels: np.ndarray, probs: np.ndarray, unspecified: str = "negative", grid: int = 1001
) -> tuple[np.ndarray, float]:
    """Decision thresholds that maximise label-based mA on the given (train or val, never test) samples: one
    per attribute (midpoints between consecutive distinct scores, so a threshold never sits on a sample) and one
    global (a 1/(grid-1) grid over [0, 1], maximising the mean over attributes). Ties keep the threshold closest
    to 0.5; an attribute without both classes keeps 0.5."""
    labels, probs = check_predictions(labels, probs, unspecified)
    pos, neg, _ = _masks(labels, unspecified)
    K = labels.shape[1]
    per = np.full(K, 0.5)
    taus = np.linspace(0.0, 1.0, grid)
    curve = np.zeros((K, grid))
    for j in range(K):
        sp, sn = np.sort(probs[pos[:, j], j]), np.sort(probs[neg[:, j], j])
        if not sp.size or not sn.size:
            curve[j] = np.nan
            continue
        u = np.unique(probs[pos[:, j] | neg[:, j], j])
        cand = np.unique(np.clip(np.r_[0.0, (u[:-1] + u[1:]) / 2, 1.0], 0.0, 1.0))
        score = _ma_at(sp, sn, cand)
        best = np.flatnonzero(score >= score.max() - 1e-12)
        per[j] = cand[best[np.argmin(np.abs(cand[best] - 0.5))]]
        curve[j] = _ma_at(sp, sn, taus)
    valid = ~np.isnan(curve).all(axis=1)
    if valid.any():
        mean = curve[valid].mean(axis=0)
        best = np.flatnonzero(mean >= mean.max() - 1e-12)
        glob = float(taus[best[np.argmin(np.abs(taus[best] - 0.5))]])
    else:
        glob = 0.5
    return per, glob
