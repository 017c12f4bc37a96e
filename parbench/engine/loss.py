"""The exp-weighted binary cross-entropy all three PAR references use (metrics.md section 7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from parbench.labels import UNSPECIFIED


def weighted_bce(
    logits: torch.Tensor, labels: torch.Tensor, pos_ratio: torch.Tensor, unspecified: str = "negative"
) -> torch.Tensor:
    """sum_j w_ij * BCE(z_ij, y_ij), averaged over the batch; w = exp(1 - p_j) on positives, exp(p_j) on
    negatives. Canonical label 255 counts as negative by default, or gets weight 0 with "ignore"."""
    target = (labels == 1).to(logits.dtype)
    weight = torch.where(target > 0.5, torch.exp(1 - pos_ratio), torch.exp(pos_ratio)).to(logits.dtype)
    if unspecified == "ignore":
        weight = weight * (labels != UNSPECIFIED).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (loss * weight.float()).sum() / logits.shape[0]
