"""Untargeted L-inf attacks in the pixel space [0, 1] of the model's input (before its normalisation): FGSM and
PGD (random start, projected signed-gradient steps), on the run's own loss, the weighted BCE over all attributes
with the training split's positive ratios. What is attacked is exactly what the run evaluates: the resized
image, normalised by the run's mean and std, through the run's model in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parbench.engine.loss import weighted_bce


@dataclass(frozen=True)
class Attack:
    name: str  # "fgsm" or "pgd"
    eps: float  # L-inf radius in [0, 1] pixel units (10/255, 4/255)
    steps: int = 10  # PGD steps (FGSM: one step of size eps)
    step_size: float | None = None  # PGD step; None = eps / 4
    random_start: bool = True  # PGD starts uniformly inside the ball

    @property
    def key(self) -> str:
        eps = f"{self.eps * 255:g}/255"
        return f"fgsm-eps{eps}" if self.name == "fgsm" else f"pgd{self.steps}-eps{eps}"

    def describe(self) -> dict:
        step = self.eps if self.name == "fgsm" else (self.step_size or self.eps / 4)
        out = {"kind": "attack", "name": self.name, "eps": self.eps, "eps_255": self.eps * 255, "norm": "linf"}
        if self.name == "pgd":
            out.update(steps=self.steps, step_size=step, random_start=self.random_start)
        else:
            out.update(steps=1, step_size=step, random_start=False)
        return out


def attack_batch(model, x, labels, pos_ratio, mean, std, attack: Attack, unspecified: str, autocast, gen=None):
    """(adversarial x in [0, 1], the loss after each step): `x` (B, 3, H, W) in [0, 1]; labels (B, K)."""
    norm = lambda z: (z - mean) / std

    def loss_of(z):
        with autocast():
            out = model(norm(z))
        return weighted_bce(out["logits"].float(), labels, pos_ratio, unspecified)

    eps = attack.eps
    if attack.name == "fgsm":
        z = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_of(z), z)
        adv = (x + eps * g.sign()).clamp(0, 1).detach()
        with torch.no_grad():
            return adv, [float(loss_of(adv))]
    step = attack.step_size or eps / 4
    delta = torch.zeros_like(x)
    if attack.random_start:
        delta = (torch.rand(x.shape, generator=gen, device="cpu").to(x.device) * 2 - 1) * eps
    adv = (x + delta).clamp(0, 1).detach()
    losses = []
    for _ in range(attack.steps):
        z = adv.clone().requires_grad_(True)
        loss = loss_of(z)
        losses.append(loss.detach())  # read once at the end: no host sync per step
        (g,) = torch.autograd.grad(loss, z)
        adv = torch.min(torch.max(adv + step * g.sign(), x - eps), x + eps).clamp(0, 1).detach()
    with torch.no_grad():
        losses.append(loss_of(adv))
    return adv, [float(v) for v in torch.stack(losses).cpu()]
