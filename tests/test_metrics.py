"""Metric definitions against hand-computed cases (metrics.md) and the two protocols."""

import numpy as np
import pytest

from parbench.errors import ParbenchError
from parbench.metrics import bootstrap_ci, paired_bootstrap, pedestrian_metrics

# 4 samples x 3 attributes
LABELS = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 0]], dtype=np.uint8)
PROBS = np.array(
    [
        [0.9, 0.1, 0.2],  # TP, TN, FN
        [0.1, 0.2, 0.3],  # no predicted positives (GT has positives)
        [0.1, 0.2, 0.3],  # neither GT nor prediction: scores 0, not skipped
        [
            0.8,
            0.45,
            0.1,
        ],  # 0.45 == threshold -> negative; predicted positive on an empty-GT... not empty here
    ]
)


def test_hand_computed_promptpar():
    m = pedestrian_metrics(LABELS, PROBS, "promptpar")
    # attribute 0: P=2 (rows 0,1), TP=1 -> TPR 0.5; N=2 (rows 2,3), TN=1 (row 2) -> TNR 0.5 -> 0.5
    # attribute 1: P=2 (rows 1,3), TP=0 (0.45 is not > 0.45); N=2, TN=2 -> (0 + 1)/2 = 0.5
    # attribute 2: P=1 (row 0), TP=0; N=3, TN=3 -> 0.5
    assert m.ma == pytest.approx(0.5)
    np.testing.assert_allclose(m.label_pos_recall, [0.5, 0.0, 0.0])
    np.testing.assert_allclose(m.label_neg_recall, [0.5, 1.0, 1.0])
    # instance: row0 I=1 U=2 -> acc .5, prec 1, rec .5, f1 2/3; row1 all 0; row2 all 0;
    # row3: Y={1}, Yhat={0} -> I=0, U=2 -> 0
    assert m.acc == pytest.approx(0.5 / 4)
    assert m.prec == pytest.approx(1 / 4 + 0 + 0 + 0)  # row3 prec 0/1
    assert m.rec == pytest.approx(0.5 / 4)
    assert m.f1 == pytest.approx((2 / 3) / 4)
    assert m.threshold == 0.45


def test_rethinking_f1_is_harmonic_of_means():
    m = pedestrian_metrics(LABELS, PROBS, "rethinking")
    assert m.threshold == 0.5
    assert m.f1 == pytest.approx(2 * m.prec * m.rec / (m.prec + m.rec))
    # at 0.5 the 0.45 entry is negative too, so instance sets equal the promptpar case here
    assert m.prec == pytest.approx(0.25)


def test_probability_equal_to_threshold_is_negative():
    labels = np.array([[1]], dtype=np.uint8)
    assert pedestrian_metrics(labels, np.array([[0.45]]), "promptpar").label_pos_recall[0] == 0.0
    assert pedestrian_metrics(labels, np.array([[0.4500001]]), "promptpar").label_pos_recall[0] == 1.0
    assert pedestrian_metrics(labels, np.array([[0.5]]), "rethinking").label_pos_recall[0] == 0.0


def test_predicted_positive_with_empty_truth_scores_zero():
    m = pedestrian_metrics(np.array([[0, 0]], np.uint8), np.array([[0.9, 0.1]]))
    assert (m.acc, m.prec, m.rec, m.f1) == (0.0, 0.0, 0.0, 0.0)


def test_attribute_without_positives_caps_at_half():
    labels = np.array([[0, 1], [0, 0]], dtype=np.uint8)
    m = pedestrian_metrics(labels, np.array([[0.1, 0.9], [0.2, 0.1]]))
    assert m.label_ma[0] == pytest.approx(0.5)  # TPR 0 (no positives), TNR 1
    assert m.label_ma[1] == pytest.approx(1.0)


def test_unspecified_negative_ignore_and_stored():
    labels = np.array([[1, 255], [0, 1]], dtype=np.uint8)
    probs = np.array([[0.9, 0.9], [0.1, 0.9]])
    neg = pedestrian_metrics(labels, probs, unspecified="negative")
    # attr1: 255 counted as negative and predicted positive -> TNR 0; P=1 TP=1 -> 0.5
    assert neg.label_ma[1] == pytest.approx(0.5)
    assert neg.acc == pytest.approx((1 / 2 + 1) / 2)  # row0: Y={0}, Yhat={0,1}
    ign = pedestrian_metrics(labels, probs, unspecified="ignore")
    # attr1: only row1 counts: P=1 TP=1, N=0 -> (1 + 0)/2
    assert ign.label_ma[1] == pytest.approx(0.5)
    assert ign.acc == pytest.approx(1.0)  # row0: prediction on the ignored entry does not count
    assert ign.prec == pytest.approx(1.0)
    stored = pedestrian_metrics(labels, probs, unspecified="stored")
    # reference behaviour on raw values: excluded from counts but enlarges the predicted set and union
    assert stored.label_ma[1] == pytest.approx(0.5)
    assert stored.acc == pytest.approx((1 / 2 + 1) / 2)
    assert stored.prec == pytest.approx((1 / 2 + 1) / 2)


def test_bootstrap_intervals_contain_point_and_are_seeded():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 6)) < 0.3).astype(np.uint8)
    probs = np.clip(labels * 0.6 + rng.random((200, 6)) * 0.5, 0, 1)
    m = pedestrian_metrics(labels, probs)
    ci = bootstrap_ci(labels, probs, n_boot=300, seed=1)
    for k in ("ma", "acc", "prec", "rec", "f1"):
        lo, hi = ci[k]
        assert lo <= getattr(m, k) <= hi
    assert ci == bootstrap_ci(labels, probs, n_boot=300, seed=1)
    res = paired_bootstrap(labels, probs, np.full_like(probs, 0.5), n_boot=200)
    assert res["delta"] > 0 and res["p_value"] < 0.05


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(ParbenchError):
        pedestrian_metrics(np.zeros((2, 3), np.uint8), np.zeros((2, 2)))
    with pytest.raises(ParbenchError):
        pedestrian_metrics(np.zeros((2, 3), np.uint8), np.zeros((2, 3)), protocol="nope")


def test_average_precision_and_auroc_match_scikit_learn():
    """Against an independent implementation, ties included (scores rounded to 1-3 decimals)."""
    sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn (test extra) is not installed")
    from parbench.metrics import average_precision, ranking_metrics, roc_auc

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 60))
        y = rng.random(n) < rng.random()
        s = np.round(rng.random(n), int(rng.integers(1, 4)))
        if y.any():
            assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
        if y.any() and (~y).any():
            assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    labels = np.array([[1, 0, 255], [0, 0, 1], [1, 255, 0], [0, 1, 1]], np.uint8)
    probs = np.array([[0.9, 0.2, 0.7], [0.3, 0.1, 0.6], [0.8, 0.6, 0.2], [0.4, 0.7, 0.9]])
    r = ranking_metrics(labels, probs, "ignore")  # 255 left out of attribute 2 and 3's rankings
    want = np.mean(
        [
            sk.average_precision_score(labels[[0, 1, 2, 3], 0], probs[:, 0]),
            sk.average_precision_score(labels[[0, 1, 3], 1], probs[[0, 1, 3], 1]),
            sk.average_precision_score(labels[[1, 2, 3], 2], probs[[1, 2, 3], 2]),
        ]
    )
    assert r["map"] == pytest.approx(want) and r["n_ap"] == 3
    neg = ranking_metrics(labels, probs, "negative")  # 255 counts as a negative there
    assert neg["label_ap"][1] == pytest.approx(sk.average_precision_score([0, 0, 0, 1], probs[:, 1]))


def test_forward_flops_of_one_block_by_hand():
    """One open_clip transformer block on L tokens of width W: q, k, v and output projections 4 L W^2
    multiply-adds, attention scores and the weighted sum 2 L^2 W, the MLP 8 L W^2; FLOPs = 2 x multiply-adds."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    from parbench.info import forward_flops

    L, W = 17, 64

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blk = ResidualAttentionBlock(W, 4, batch_first=True)

        def forward(self, x):  # x: (1, 3, L, W) "image" reshaped to tokens
            return self.blk(x[0, 0])

    with torch.device("meta"):
        block = Block()
    assert forward_flops(block, (L, W)) == 2 * (12 * L * W * W + 2 * L * L * W)


def test_stored_mode_takes_a_raw_rap_2_as_the_reference_metric_code_does():
    from parbench.errors import ParbenchError
    from parbench.metrics import pedestrian_metrics

    probs = np.array([[0.9, 0.2, 0.6], [0.3, 0.7, 0.1], [0.8, 0.4, 0.5]])
    raw = np.array([[1, 0, 2], [0, 1, 1], [2, 0, 0]])
    canon = np.where(raw == 2, 255, raw)
    a, b = (
        pedestrian_metrics(raw, probs, unspecified="stored"),
        pedestrian_metrics(canon, probs, unspecified="stored"),
    )
    assert a.headline() == b.headline()
    with pytest.raises(ParbenchError, match="0, 1 and 255"):  # elsewhere a 2 is a mistake, not a label
        pedestrian_metrics(raw, probs)


def test_stored_loss_keeps_a_raw_rap_2_as_vtb_and_promptpar_code_do():
    """Their loaders pass RAP's 2 on: p_j = labels.mean(0) over the raw values, the weight function sees the
    binarised target (a 2 weighs as a positive), and the BCE takes y = 2. parbench's default maps it to 0."""
    import torch

    from parbench.engine.loss import positive_ratio, weighted_bce

    raw = np.array([[1, 0, 2], [2, 0, 0], [0, 1, 2], [1, 0, 0]], np.float64)  # as a RAP file stores them
    labels = np.where(raw == 2, 255, raw).astype(np.uint8)  # parbench's canonical labels
    np.testing.assert_allclose(positive_ratio(labels, "stored"), raw.mean(0), rtol=1e-6)
    np.testing.assert_allclose(positive_ratio(labels), (raw == 1).mean(0))
    z = np.array([[0.3, -1.2, 2.0], [-0.5, 0.1, 0.7], [1.5, -0.3, -2.2], [0.0, 0.9, -0.4]])
    p = raw.mean(0)
    sig = 1 / (1 + np.exp(-z))
    w = np.where(raw > 0.5, np.exp(1 - p), np.exp(p))  # the reference's weight of a binarised target
    hand = (w * -(raw * np.log(sig) + (1 - raw) * np.log(1 - sig))).sum() / len(raw)
    got = weighted_bce(torch.tensor(z), torch.tensor(labels), torch.tensor(p, dtype=torch.float64), "stored")
    assert float(got) == pytest.approx(hand, rel=1e-6)
    neg = np.where(raw == 2, 0, raw)  # Rethinking's 2 -> 0
    pn = (neg == 1).mean(0)
    wn = np.where(neg > 0.5, np.exp(1 - pn), np.exp(pn))
    hand_neg = (wn * -(neg * np.log(sig) + (1 - neg) * np.log(1 - sig))).sum() / len(raw)
    got = weighted_bce(torch.tensor(z), torch.tensor(labels), torch.tensor(pn, dtype=torch.float64))
    assert float(got) == pytest.approx(hand_neg, rel=1e-6)
