"""The parameter-efficient baselines (LoRA, VPT-deep) and the zero-shot track: exact parameter counts, only the
intended parameters learn, same seed -> same numbers, features shared, thresholds never fitted on test."""

import numpy as np
import pytest
import torch

from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.engine.run import RunSpec, run
from parbench.info import method_info

FAST = {"limit": 48, "epochs": 2, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}


def test_exact_parameter_counts_on_vit_l_14():
    """By hand, PETA (35 attributes), ViT-L/14 (24 blocks, width 1024, embedding 768): the head is 768 x 35 + 35.
    LoRA r=8 on attention: the fused q/k/v input projection (A: 8 x 1024, B: 3072 x 8) and the output projection
    (8 x 1024 + 1024 x 8) per block. VPT-deep: 50 prompts x 1024 in each of 24 layers."""
    head = 768 * 35 + 35
    lora = method_info("lora", "ViT-L-14", "PETA", None, {})
    assert lora["trainable_params"] == 24 * (8 * 1024 + 3072 * 8 + 8 * 1024 + 1024 * 8) + head == 1_206_563
    assert lora["total_params"] == lora["image_tower_params"] + lora["trainable_params"]
    mlp = method_info("lora", "ViT-L-14", "PETA", None, {"targets": "attn+mlp"})
    assert mlp["trainable_params"] == lora["trainable_params"] + 24 * 8 * (1024 + 4096 + 4096 + 1024)
    vpt = method_info("vpt-deep", "ViT-L-14", "PETA", None, {})
    assert vpt["trainable_params"] == 24 * 50 * 1024 + head == 1_255_715
    b16 = method_info("vpt-deep", "ViT-B-16", "PETA", None, {})  # 12 blocks: 12 layers of prompts, not 24
    assert b16["trainable_params"] == 12 * 50 * 768 + 512 * 35 + 35


def _gradients(method, **opts):
    from parbench.methods import get_method

    spec = get_method(method)
    torch.manual_seed(0)
    model = spec.build(create_backbone("parbench-tiny"), load_card("synthetic"), spec.options(**opts))
    model.train()
    out = model(torch.randn(3, 3, 224, 224))["logits"]
    out.sum().backward()
    return model


@pytest.mark.parametrize("method,learns", [("lora", ("lora_", "head.")), ("vpt-deep", ("prompts", "head."))])
def test_only_the_intended_parameters_learn(method, learns):
    model = _gradients(method)
    for name, p in model.named_parameters():
        if any(k in name for k in learns):
            assert p.requires_grad, name
        else:
            assert not p.requires_grad and p.grad is None, name
    if method == "lora":  # B starts at zero, so A gets no gradient yet: B must get one
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    else:
        assert model.prompts.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["lora", "vpt-deep"])
def test_same_seed_same_numbers(method, tmp_path):
    def go(out, seed=0):
        return run(
            RunSpec(
                dataset="synthetic",
                method=method,
                backbone="parbench-tiny",
                seed=seed,
                overrides=FAST,
                out=str(tmp_path / out),
                quiet=True,
            )
        )

    a, b = go("a"), go("b")
    assert a["metrics"] == b["metrics"] and a["ranking"]["map"] is not None
    assert go("c", seed=1)["metrics"] != a["metrics"]


def test_zeroshot_shares_linear_probe_features_and_fits_on_val_only(tmp_path):
    from parbench.data import load_dataset
    from parbench.metrics import fit_thresholds
    from parbench.settings import cache_dir

    spec = dict(dataset="synthetic", backbone="parbench-tiny", overrides={**FAST, "limit": 0}, quiet=True)
    lp = run(RunSpec(method="linear-probe", out=str(tmp_path / "lp"), **spec))
    n_files = len(list((cache_dir() / "features").glob("*.npy")))
    zs = run(RunSpec(method="zeroshot", out=str(tmp_path / "zs"), **spec))
    assert len(list((cache_dir() / "features").glob("*.npy"))) == n_files  # test and val features reused
    assert zs["eval_timed"] == "head on cached features" and lp["key"] != zs["key"]
    fitted = zs["zeroshot_fitted"]
    assert fitted["fit_split"] == "val" and fitted["n_fit"] == len(load_dataset("synthetic").partition("val"))
    # the thresholds are what fitting on val gives; test labels never enter
    from parbench.data.torchdata import ImageSplit  # noqa: F401  (the same path the run took)
    from parbench.engine.evaluate import predict_split
    from parbench.engine.restore import restore

    r = restore(zs["run_dir"])
    ds = load_dataset("synthetic")
    probs, labels = predict_split(r.built, ds, ds.partition("val"), torch.device("cpu"))
    per, glob = fit_thresholds(labels, probs)
    np.testing.assert_allclose(fitted["thresholds"], per)
    assert fitted["global_threshold"] == glob
    # another prompt set: a new text bank, the same cached image features
    other = run(
        RunSpec(
            method="zeroshot",
            out=str(tmp_path / "zs2"),
            **{**spec, "overrides": {**spec["overrides"], "prompt_set": "photo"}},
        )
    )
    assert len(list((cache_dir() / "features").glob("*.npy"))) == n_files
    assert other["metrics"] != zs["metrics"]


def test_sigmoid_head_uses_the_models_own_scale_and_bias():
    from baselines.zeroshot import ZeroShotOptions, build

    bb = create_backbone("parbench-tiny-sigmoid", "none")
    card = load_card("synthetic")
    model = build(bb, card, ZeroShotOptions())
    assert model.head.kind == "sigmoid"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = torch.nn.functional.normalize(bb.model.encode_image(x), dim=-1)
        logits = model(x)["logits"]
        want = bb.model.logit_scale.exp() * f @ model.head.bank[:, 0].t() + bb.model.logit_bias
    torch.testing.assert_close(logits, want)
    pair = build(create_backbone("parbench-tiny", "none"), card, ZeroShotOptions())
    assert pair.head.kind == "pair"
