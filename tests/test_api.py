"""The public API a plugin imports: its names are listed here, so removing or renaming one fails; each is
documented; the model contract and the plain-model convenience behave as documented."""

import dataclasses
import re

import pytest
import torch
import torch.nn as nn

import parbench.api as api
from parbench.errors import ParbenchError

PUBLIC = {
    "NEGATIVE", "POSITIVE", "PROMPT_TUNING", "RECIPE_KEYS", "TOWER_TUNING", "UNSPECIFIED", "Attribute", "Backbone",
    "Card", "LogitsModel", "MethodSpec", "PARDataset", "ParbenchError", "Preprocess", "TrainConfig", "block_forward",
    "build_model", "cache_dir", "check_output", "check_relpath", "count_params", "create_backbone", "freeze",
    "image_tokens", "load_card", "load_config_file", "load_pickle", "load_torch", "load_weights_only",
    "param_groups", "plain_method", "prompt_init", "prompt_identity", "prompt_sets", "prompt_sha256", "in_template", "register_method",
    "register_reader", "resolve_config", "sentences",
    "save_torch", "weighted_bce",
}  # fmt: skip


def test_the_public_names_are_exactly_these():
    assert set(api.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(api, name), name


@pytest.mark.parametrize("name", sorted(n for n in PUBLIC if callable(getattr(api, n))))
def test_every_public_function_and_class_is_documented(name):
    doc = getattr(api, name).__doc__
    assert doc and doc.strip() and not doc.startswith(("dict() ", "Create and return")), name


def test_recipe_keys_are_the_engine_settings():
    assert {f.name for f in dataclasses.fields(api.TrainConfig)} == api.RECIPE_KEYS
    assert {"epochs", "lr", "batch_size", "optimizer"} <= api.RECIPE_KEYS


def test_check_output_names_the_method_and_the_shape():
    api.check_output({"logits": torch.zeros(4, 3)}, 4, 3, "method m")
    api.check_output({"logits": torch.zeros(4, 3), "aux": [torch.zeros(4, 3)]}, 4, 3, "method m")
    for out, found in (
        (torch.zeros(4, 3), "Tensor"),
        ({"y": 1}, "keys ['y']"),
        ({"logits": torch.zeros(4, 2)}, "(4, 2)"),
        ({"logits": torch.zeros(4, 3), "aux": [1]}, "int"),
    ):
        with pytest.raises(ParbenchError, match=rf"^method m: .*{re.escape(found)}"):
            api.check_output(out, 4, 3, "method m")


def test_plain_method_wraps_a_logits_module_and_keeps_its_groups():
    class Net(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.fc = nn.Linear(5, k)

        def forward(self, x):
            return self.fc(x)

        def param_groups(self, cfg):
            return [{"params": list(self.fc.parameters()), "lr": cfg.lr * 2, "weight_decay": 0.0}]

    spec = api.plain_method("net", lambda bb, card, o: Net(card.num_attributes), recipe={"epochs": 3})
    card = type("C", (), {"num_attributes": 3})()
    model = spec.build(None, card, None)
    out = model(torch.zeros(2, 5))
    api.check_output(out, 2, 3, "net")
    groups = api.param_groups(model, api.TrainConfig(lr=0.1))
    assert groups[0]["lr"] == 0.2 and groups[0]["params"][0] is model.net.fc.weight
    assert spec.recipe == {"epochs": 3} and spec.backbones == ("open_clip", "timm")


def test_param_groups_default_is_every_trainable_parameter():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    api.freeze(m[0])
    (group,) = api.param_groups(m, api.TrainConfig(lr=0.5, weight_decay=0.1))
    assert [p.shape for p in group["params"]] == [(2, 2), (2,)] and group["lr"] == 0.5
    assert group["params"][0] is m[1].weight
