"""Reference checkpoints: written in the reference's layout (real key names, raw attribute order, EasyDict
result, old `ViT_model` / `vis_embed` names), imported strictly, identical logits; `parbench eval` on them."""

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.errors import ParbenchError
from promptpar.checkpoint import (
    export_reference,
    import_reference,
    infer_options,
    load_reference_file,
    reference_order,
)
from promptpar.config import PromptParConfig
from promptpar.method import build
from tests.fixtures import originals

TINY = dict(variant="reference", fusion_dim=32, fusion_heads=2)


def _model(card, seed):
    torch.manual_seed(seed)
    model = build(create_backbone("parbench-tiny"), card, PromptParConfig(**TINY))
    with torch.no_grad():  # make every attribute-indexed tensor distinct, so a wrong permutation shows
        for bn in (model.fusion.bn, model.agg_bn):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
        model.prompt_text_deep.normal_()
    return model.eval()


def _save_reference(model, card, path, **kw):
    import easydict

    ckpt = export_reference(model, card, result=easydict.EasyDict(ma=0.5, f1=0.4), **kw)
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize("layout", [dict(), dict(vis_key="vis_embed", clip_key="ViT_model")])
def test_reference_checkpoint_round_trip_gives_identical_logits(tmp_path, layout):
    card = load_card("PA100k")  # raw file order differs from the evaluation order
    assert reference_order(card) != card.attribute_names
    src = _model(card, 0)
    path = tmp_path / "epoch7.pth"
    ckpt = _save_reference(src, card, path, **layout)
    # the file is in the reference's order: the head at reference position r is attribute raw_order[r]
    r = reference_order(card).index(card.attribute_names[0])
    assert torch.equal(ckpt["model_state_dict"][f"weight_layer.{r}.weight"], src.fusion.weight_layer[0].weight)
    if "vis_key" in layout:
        assert "vis_embed.weight" in ckpt["model_state_dict"] and "ViT_model" in ckpt
    dst = _model(card, 1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert not torch.equal(src(x)["logits"], dst(x)["logits"])
        import_reference(dst, card, load_reference_file(path), str(path))
        assert torch.equal(src(x)["logits"], dst(x)["logits"])
    assert infer_options(ckpt) == {
        "variant": "reference",
        "vis_depth": 24,
        "vis_prompt": 50,
        "use_textprompt": True,
        "text_prompt": 3,
        "use_div": True,
        "div_num": 4,
        "use_GL": True,
        "fusion_dim": 32,
        "use_mm_former": True,
        "mm_layers": 1,
    }


def test_fp16_reference_weights_load_as_float32(tmp_path):
    card = load_card("synthetic")
    src = _model(card, 0)
    ckpt = export_reference(src, card)
    ckpt["clip_model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["clip_model"].items()}
    dst = _model(card, 1)
    import_reference(dst, card, ckpt)
    assert dst.clip.visual.conv1.weight.dtype == torch.float32
    assert torch.equal(dst.clip.visual.proj, src.clip.visual.proj.half().float())


def test_missing_unexpected_and_misshaped_tensors_are_listed(tmp_path):
    card = load_card("synthetic")
    ckpt = export_reference(_model(card, 0), card)
    del ckpt["model_state_dict"]["bn.running_var"]
    del ckpt["clip_model"]["visual.transformer.prompt_deep"]
    ckpt["clip_model"]["visual.extra"] = torch.zeros(1)
    ckpt["model_state_dict"]["word_embed.weight"] = torch.zeros(3, 3)
    dst = _model(card, 1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ParbenchError) as e:
        import_reference(dst, card, ckpt, "bad.pth")
    msg = str(e.value)
    for name in ("fusion.bn.running_var", "prompt_deep", "clip.visual.extra", "fusion.word_embed.weight"):
        assert name in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing half-loaded


def test_fixed_variant_refuses_reference_weights():
    card = load_card("synthetic")
    ckpt = export_reference(_model(card, 0), card)
    torch.manual_seed(0)
    fixed = build(create_backbone("parbench-tiny"), card, PromptParConfig(fusion_dim=32, fusion_heads=2))
    with pytest.raises(ParbenchError, match="variant=reference"):
        import_reference(fixed, card, ckpt)


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "clip_model": {}, "result": _Evil()}, path, pickle_protocol=2)
    with pytest.raises(ParbenchError, match="refused"):
        load_reference_file(path)
    assert not (tmp_path / "PWNED").exists()
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(ParbenchError):
        load_reference_file(tmp_path / "plain.pkl")
    assert not (tmp_path / "PWNED").exists()


def test_eval_command_on_a_reference_checkpoint(tmp_path):
    from parbench.cli import app

    card = load_card("PA100k")
    root = tmp_path / "PA100k"
    root.mkdir()
    originals.pa100k(root, sizes=(6, 3, 5), images=True)
    src = _model(card, 0)
    _save_reference(src, card, tmp_path / "ckpt.pth", vis_key="vis_embed")
    args = [
        "eval",
        "--checkpoint",
        str(tmp_path / "ckpt.pth"),
        "--dataset",
        "PA100k",
        "--root",
        str(root),
        "--backbone",
        "parbench-tiny",
        "--set",
        "fusion_heads=2",
        "--set",
        "device=cpu",
        "--predictions",
        str(tmp_path / "p.npz"),
        "--json",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["format"] == "reference" and res["n"] == 5 and res["dataset"] == "PA100k"
    saved = np.load(tmp_path / "p.npz")
    assert saved["probs"].shape == (5, 26)
    # the same model, evaluated directly, gives the same probabilities (images through the same transform;
    # pinned to CPU fp32: on a GPU eval runs under bf16 autocast, ~4e-3 away)
    from parbench.data import load_dataset
    from parbench.data.torchdata import ImageSplit
    from parbench.data.transforms import build_transform

    ds = load_dataset("PA100k", str(root))
    pre = dataclasses.replace(
        create_backbone("parbench-tiny").preprocess, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear"
    )  # the reference's: mean = std = 0.5, bilinear resize
    items = ImageSplit(ds, ds.partition("test"), build_transform(pre, False))
    x = torch.stack([items[i][0] for i in range(len(items))])
    with torch.no_grad():
        direct = torch.sigmoid(src(x)["logits"]).numpy()
    np.testing.assert_allclose(saved["probs"], direct, atol=1e-5)
    assert 0.0 <= res["metrics"]["promptpar"]["ma"] <= 1.0
