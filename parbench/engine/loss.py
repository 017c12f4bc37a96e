"""The exp-weighted binary cross-entropy all three PAR references use (metrics.md section 7)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from parbench.labels import UNSPECIFIED

# RAP's raw code for an uncertain label, which VTB's and PromptPAR's loaders pass to the loss unchanged
RAW_UNCERTAIN = 2.0


def positive_ratio(labels: np.ndarray, unspecified: str = "negative") -> np.ndarray:
    """p_j, the loss weights' positive ratio over the training labels (K,). Under "stored" an unspecified label
    counts as the raw 2 the references average in (their `labels.mean(0)` over stored values: inflated by 2s)."""
    if unspecified == "stored":
        raw = np.where(labels == UNSPECIFIED, RAW_UNCERTAIN, labels.astype(np.float64))
        return raw.mean(0).astype(np.float32)
    return (labels == 1).mean(0).astype(np.float32)


def weighted_bce(
    logits: torch.Tensor, labels: torch.Tensor, pos_ratio: torch.Tensor, unspecified: str = "negative"
) -> torch.Tensor:
    """sum_j w_ij * BCE(z_ij, y_ij), averaged over the batch; w = exp(1 - p_j) on positives, exp(p_j) on
    negatives. Canonical label 255 counts as negative by default, or gets weight 0 with "ignore". With "stored" it
    is what VTB's and PromptPAR's code do with a raw RAP 2: the BCE takes y = 2 (its gradient sigma(z) - 2 always
    pushes the logit up) and the weight function, given the binarised target, weighs it as a positive."""
    unknown = labels == UNSPECIFIED
    target = (labels == 1).to(logits.dtype)
    binarised = target + unknown.to(logits.dtype) if unspecified == "stored" else target
    weight = torch.where(binarised > 0.5, torch.exp(1 - pos_ratio), torch.exp(pos_ratio)).to(logits.dtype)
    if unspecified == "ignore":
        weight = weight * (~unknown).to(logits.dtype)
    if unspecified == "stored":
        target = torch.where(unknown, torch.full_like(target, RAW_UNCERTAIN), target)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (loss * weight.float()).sum() / logits.shape[0]
