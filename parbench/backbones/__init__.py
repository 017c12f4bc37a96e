"""Backbones: an open_clip model name plus its weights, built in one place.

`factory.create_backbone` is the only code that calls open_clip to build a model; `weights` reads weight files,
`tiny` makes the tiny test/demo backbone's weights, `base` holds what they share. Imports run one way:
factory -> tiny -> base, factory -> weights.
"""

from parbench.backbones.base import (
    DEFAULT_PRETRAINED,
    INTERPOLATIONS,
    OPENAI_MEAN,
    OPENAI_STD,
    TINY,
    Backbone,
    Preprocess,
    activation_of,
    list_backbones,
)
from parbench.backbones.factory import create_backbone, resolve_pretrained
from parbench.backbones.weights import load_weights_file

__all__ = ["DEFAULT_PRETRAINED", "INTERPOLATIONS", "OPENAI_MEAN", "OPENAI_STD", "TINY", "Backbone", "Preprocess",
           "activation_of", "create_backbone", "list_backbones", "load_weights_file", "resolve_pretrained"]  # fmt: skip
