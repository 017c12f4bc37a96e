"""Held-out attributes: methods with a text side train on the rest and are scored on both, seen and unseen apart;
the held-out attributes' labels, heads and sentences never take part in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from parbench.cards import load_card
from parbench.engine.run import RunSpec, run
from parbench.errors import ParbenchError

TINY_PROMPTPAR = {"fusion_init": "random", "fusion_dim": 64, "fusion_heads": 2, "vis_prompt": 10}
FAST = {"epochs": 1, "limit": 32, "batch_size": 16, "eval_batch_size": 32, "bootstrap": 0}


def _run(tmp_path, dataset, method="promptpar", over=None, backbone="parbench-tiny", out="runs"):
    settings = {**FAST, **(TINY_PROMPTPAR if method == "promptpar" else {}), **(over or {})}
    spec = RunSpec(
        dataset, method, backbone=backbone, pretrained="none", overrides=settings, out=str(tmp_path / out), quiet=True
    )
    return run(spec)


def _trained(rec) -> dict:
    return torch.load(Path(rec["run_dir"]) / "trainable.pt", weights_only=True)["trainable"]


def test_heldout_attributes_never_reach_training_and_their_heads_are_the_seen_heads_mean(tmp_path):
    card = Path(load_card("synthetic").path).read_text()
    a = tmp_path / "a.toml"
    a.write_text(card.replace('name = "synthetic"', 'name = "synthetic-a"', 1))
    b = tmp_path / "b.toml"  # the held-out attributes' sentences changed: nothing trained may notice
    b.write_text(
        a.read_text()
        .replace('positive = "A pedestrian with a backpack"', 'positive = "Something else entirely"')
        .replace('positive = "A pedestrian with a handbag"', 'positive = "A red kite over the sea"')
    )
    assert a.read_text() != b.read_text()
    ra = _run(tmp_path, str(a), over={"heldout_attributes": "@carried"}, out="a")
    rb = _run(tmp_path, str(b), over={"heldout_attributes": "@carried"}, out="b")
    names = load_card("synthetic").attribute_names
    held = [names.index("backpack"), names.index("handbag")]
    seen = [i for i in range(len(names)) if i not in held]
    ta, tb = _trained(ra), _trained(rb)
    # every trained tensor of the seen attributes is bit-identical whatever the held-out sentences say
    for k, v in ta.items():
        if k == "prompt_text_deep":
            torch.testing.assert_close(v[:, :, seen], tb[k][:, :, seen], rtol=0, atol=0)
        elif k.startswith("fusion.weight_layer."):
            if int(k.split(".")[2]) in seen:
                torch.testing.assert_close(v, tb[k], rtol=0, atol=0)
        elif not k.startswith(("agg_bn", "fusion.bn")):
            torch.testing.assert_close(v, tb[k], rtol=0, atol=0, msg=k)
    # an unseen attribute's head, prompts and BN entries are the mean of the seen ones': never trained
    heads = torch.stack([ta[f"fusion.weight_layer.{i}.weight"] for i in seen]).mean(0)
    for i in held:
        torch.testing.assert_close(ta[f"fusion.weight_layer.{i}.weight"], heads)
        torch.testing.assert_close(ta["prompt_text_deep"][:, :, i], ta["prompt_text_deep"][:, :, seen].mean(2))
    ov = ra["open_vocabulary"]
    assert ov["heldout"] == ["backpack", "handbag"] and len(ov["seen"]) == len(names) - 2
    assert set(ov["promptpar"]) == {"seen", "unseen"} and ra["identity"]["heldout"] == ["backpack", "handbag"]


def test_the_seen_view_drops_the_heldout_labels_before_anything_trains():
    from parbench.data import load_dataset
    from parbench.engine.open_vocab import seen_view

    card, ds = load_card("synthetic"), load_dataset("synthetic")
    seen_card, seen_ds, keep = seen_view(card, ds, ["hat", "handbag"])
    assert "hat" not in seen_card.attribute_names and seen_ds.labels.shape[1] == card.num_attributes - 2
    np.testing.assert_array_equal(seen_ds.labels, ds.labels[:, keep])


def test_vtb_and_zeroshot_score_unseen_attributes_and_methods_without_text_refuse(tmp_path):
    vtb = _run(
        tmp_path,
        "synthetic",
        "vtb",
        {
            "heldout_attributes": "hat,glasses",
            "text_encoder": "clip:parbench-tiny:none",
            "text_dim": 64,
            "height": 64,
            "width": 32,
        },
        backbone="timm:test_vit",
    )
    assert vtb["open_vocabulary"]["heldout"] == ["hat", "glasses"]
    t = _trained(vtb)
    seen = [i for i, a in enumerate(load_card("synthetic").attribute_names) if a not in ("hat", "glasses")]
    torch.testing.assert_close(
        t["weight_layer.0.bias"], torch.stack([t[f"weight_layer.{i}.bias"] for i in seen]).mean(0)
    )
    zs = _run(tmp_path, "synthetic", "zeroshot", {"heldout_attributes": "@headwear"})
    assert zs["open_vocabulary"]["promptpar"]["unseen"]["ma"] >= 0 and zs["zeroshot_fitted"] is None
    with pytest.raises(ParbenchError, match=r"method finetune: a text side to score attributes it was not trained on"):
        _run(tmp_path, "synthetic", "finetune", {"heldout_attributes": "hat"})
    with pytest.raises(ParbenchError, match=r"an attribute split named 'nope' \(splits: carried, headwear\)"):
        _run(tmp_path, "synthetic", "zeroshot", {"heldout_attributes": "@nope"})
    with pytest.raises(ParbenchError, match=r"heldout_attributes: attributes of synthetic; found hatt"):
        _run(tmp_path, "synthetic", "zeroshot", {"heldout_attributes": "hatt"})
