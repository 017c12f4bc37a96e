"""An exponential moving average of the weights a run trains (timm's ModelEmaV2, as Rethinking_of_PAR uses it).

The average covers what a run saves (trainable parameters and the buffers of the modules that own one, such as
BatchNorm statistics); frozen weights never change, so averaging them would be a copy. It is updated after every
optimizer step, `shadow = decay * shadow + (1 - decay) * current`, starting from the weights training starts
with. When a run keeps one, the average is what is selected, evaluated and saved: the reference validates its EMA
model, so that is the model its numbers describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from parbench.engine.params import trainable_state


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in trainable_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        for name, avg in self.shadow.items():
            value = current[name].detach()
            if avg.device != value.device:  # first update after the model moved to its device
                avg = self.shadow[name] = avg.to(value.device)
            if avg.is_floating_point():
                avg.mul_(self.decay).add_(value, alpha=1.0 - self.decay)
            else:  # counters (BatchNorm's num_batches_tracked): the current value
                avg.copy_(value)

    def state(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {k: v.detach().clone() for k, v in trainable_state(model).items()}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(own, strict=False)
