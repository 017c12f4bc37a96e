"""`--backbone timm:NAME`: timm image towers for the feature and tuning methods, counted and preprocessed as timm
itself builds them, weights loaded strictly from files, random weights from the run's seed."""

import json

import pytest
import timm
import torch

from parbench.backbones import create_backbone
from parbench.engine.run import RunSpec, run
from parbench.errors import ParbenchError
from parbench.info import method_info

FAST = {"limit": 48, "epochs": 2, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}


def _timm_params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name, num_classes=0).parameters())


@pytest.mark.parametrize("name", ["resnet50", "vit_base_patch16_224"])
def test_counts_match_timms_own_model(name):
    """Real shapes (ResNet-50, ViT-B/16) on the meta device: the tower is timm's model less its classifier."""
    tower = _timm_params(name)
    dim = timm.create_model(name, num_classes=0, pretrained=False).num_features if name == "resnet50" else 768
    for method, trainable in (("finetune", tower + 35 * dim + 35), ("linear-probe", 35 * dim + 35)):
        info = method_info(method, f"timm:{name}", "PETA", None, {})
        assert info["image_tower_params"] == tower
        assert info["total_params"] == tower + 35 * dim + 35
        assert info["trainable_params"] == trainable
    if name == "resnet50":  # Rethinking's strong baseline on PETA: 23,508,032 + 71,715
        assert info["total_params"] == 23_579_747
    else:  # LoRA r=8 on each block's qkv (768 -> 2304) and proj (768 -> 768), plus the head
        lora = method_info("lora", f"timm:{name}", "PETA", None, {})
        assert lora["trainable_params"] == 12 * 8 * ((768 + 2304) + (768 + 768)) + 35 * 768 + 35


def test_flops_of_resnet50_are_its_published_4_1_gmacs():
    flops = method_info("linear-probe", "timm:resnet50", "PETA", None, {})["flops_per_image"]
    assert abs(flops - 2 * 4.11e9) / (2 * 4.11e9) < 0.01  # 4.11 GMACs at 224 x 224 (fvcore, torchvision)


def test_preprocessing_comes_from_the_pretrained_config():
    r50 = create_backbone("timm:resnet50", "none", meta=True).preprocess
    assert (r50.size, r50.mean, r50.std, r50.interpolation) == (
        (224, 224),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        "bicubic",
    )
    vit = create_backbone("timm:vit_base_patch16_224.augreg_in21k", "none", meta=True).preprocess
    assert vit.mean == (0.5, 0.5, 0.5) and vit.interpolation == "bicubic"
    tv = create_backbone("timm:resnet50.tv_in1k", "none", meta=True).preprocess
    assert tv.interpolation == "bilinear"  # torchvision's weights: their own resize


def test_random_weights_follow_the_seed_and_files_load_strictly(tmp_path):
    a, b = create_backbone("timm:test_vit", "none", seed=3), create_backbone("timm:test_vit", "none", seed=3)
    c = create_backbone("timm:test_vit", "none", seed=4)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        ref = timm.create_model("test_vit", num_classes=0)  # timm's own init, same seed
    for (k, v), (_, w), (_, x) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), ref.state_dict().items(), strict=True
    ):
        assert torch.equal(v, w) and torch.equal(v, x), k
    assert not torch.equal(a.model.patch_embed.proj.weight, c.model.patch_embed.proj.weight)
    # a checkpoint as timm saves one (classifier included): the tower keeps everything but the classifier
    full = timm.create_model("test_vit", num_classes=1000)
    torch.save({"state_dict": full.state_dict()}, tmp_path / "w.pth")
    bb = create_backbone("timm:test_vit", str(tmp_path / "w.pth"))
    assert bb.weights_sha256 and bb.pretrained == str(tmp_path / "w.pth")
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, full.state_dict()[k]), k
    from safetensors.torch import save_file

    save_file(full.state_dict(), tmp_path / "w.safetensors")
    bb2 = create_backbone("timm:test_vit", str(tmp_path / "w.safetensors"))
    assert torch.equal(bb2.model.patch_embed.proj.weight, full.patch_embed.proj.weight)
    sd = full.state_dict()
    sd.pop("blocks.0.attn.qkv.weight")
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(ParbenchError, match=r"missing.pth: weights for timm test_vit.*blocks.0.attn.qkv.weight"):
        create_backbone("timm:test_vit", str(tmp_path / "missing.pth"))
    with pytest.raises(ParbenchError, match=r"resnet50.*weights for timm test_vit"):
        torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "resnet50.pth")
        create_backbone("timm:test_vit", str(tmp_path / "resnet50.pth"))


def test_names_tags_and_methods_that_need_clip_are_clear_errors():
    with pytest.raises(ParbenchError, match=r"a timm model name.*close: resnet50"):
        create_backbone("timm:resnet5O", "none", meta=True)
    with pytest.raises(ParbenchError, match=r"pretrained = a timm tag \(a1_in1k"):
        create_backbone("timm:resnet50", "no_such_tag")
    with pytest.raises(ParbenchError, match=r"timm's local cache"):  # tests run offline: nothing is cached
        create_backbone("timm:test_vit", "r160_in1k")
    with pytest.raises(ParbenchError, match=r"--pretrained: a timm tag"):
        create_backbone("timm:test_vit", None)
    for method in ("zeroshot", "promptpar", "vpt-deep"):
        with pytest.raises(ParbenchError, match=rf"method {method}: a backbone it runs on \(an open_clip model name\)"):
            method_info(method, "timm:test_vit", "synthetic", None, {})


@pytest.mark.parametrize("method", ["linear-probe", "finetune", "lora"])
def test_feature_and_tuning_methods_run_on_a_timm_tower(tmp_path, method):
    spec = RunSpec(
        dataset="synthetic",
        method=method,
        backbone="timm:test_vit",
        pretrained="none",
        seed=1,
        overrides=FAST,
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    rec = run(spec)
    tower = _timm_params("test_vit")
    assert rec["image_tower_params"] == tower and tuple(rec["preprocess"]["size"]) == (160, 160)
    assert rec["weights_sha256"] == "" and rec["identity"]["weights"] == "none"
    assert ":" not in rec["run_id"]  # a folder name any filesystem takes
    if method == "finetune":
        assert rec["trainable_params"] == rec["total_params"] == tower + 64 * 12 + 12
    assert 0.0 <= rec["metrics"]["promptpar"]["ma"] <= 1.0 and rec["flops_per_image"] > 0
    again = run(RunSpec(**{**spec.__dict__, "out": str(tmp_path / "again")}))  # the seed fixes everything
    assert json.dumps(again["metrics"], sort_keys=True) == json.dumps(rec["metrics"], sort_keys=True)
