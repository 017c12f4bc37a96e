"""The field's baselines: Rethinking_of_PAR's strong baseline and VTB, counted by hand as their code builds
them, and the engine pieces their recipes need (Adam with coupled L2, ReduceLROnPlateau, one clip over the
model, drop_last, an EMA of the weights) checked against torch's and timm's own implementations."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from parbench.cards import load_card
from parbench.engine.config import TrainConfig, resolve_config
from parbench.engine.dist import GlobalBatchSampler
from parbench.engine.ema import WeightEMA
from parbench.engine.run import RunSpec, run
from parbench.engine.train import fit
from parbench.errors import ParbenchError
from parbench.info import method_info
from parbench.methods import get_method

FAST = {"limit": 48, "epochs": 2, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}


def test_strong_baseline_counts_by_hand():
    """PETA, 35 attributes: torchvision's ResNet-50 less its fc (23,508,032) + Linear(2048, 35) (71,715)."""
    info = method_info("strong-baseline", "timm:resnet50", "PETA", None, {})
    assert info["total_params"] == info["trainable_params"] == 23_508_032 + 2048 * 35 + 35 == 23_579_747
    assert info["flops_per_image"] == pytest.approx(2 * 4.11e9 * (256 * 192) / (224 * 224), rel=0.01)  # 256 x 192


def test_vtb_counts_by_hand():
    """ViT-B/16 at 256 x 128 (129 position embeddings): 85,746,432; VTB's own: word_embed 768*768+768, type
    embeddings 2*768, 35 x Linear(768, 1), BatchNorm1d(35): 619,113; the reference adds the unused fc."""
    vtb_own = (768 * 768 + 768) + 2 * 768 + 35 * 769 + 2 * 35
    assert vtb_own == 619_113
    fixed = method_info("vtb", "timm:vit_base_patch16_224", "PETA", None, {})
    assert fixed["total_params"] == fixed["trainable_params"] == 85_746_432 + vtb_own == 86_365_545
    ref = method_info("vtb", "timm:vit_base_patch16_224", "PETA", None, {"variant": "reference"})
    assert ref["trainable_params"] == 86_365_545 + 768 * 1000 + 1000 == 87_134_545
    with pytest.raises(ParbenchError, match=r"method vtb: a backbone it runs on \(timm:NAME\)"):
        method_info("vtb", "ViT-B-16", "PETA", None, {})
    with pytest.raises(ParbenchError, match=r"vtb on timm:resnet50: a timm VisionTransformer"):
        method_info("vtb", "timm:resnet50", "PETA", None, {})


def test_vtb_resizes_the_position_embedding_bilinearly_and_sets_drop_path():
    import timm

    from baselines.vtb import VTBOptions, adapt_vit

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    old = vit.pos_embed.detach().clone()  # (1, 1 + 14*14, 192)
    adapt_vit(vit, (256, 128), VTBOptions().drop_path, "timm:vit_tiny_patch16_224")
    grid = old[0, 1:].reshape(14, 14, -1).permute(2, 0, 1)[None]  # (1, D, 14, 14)
    want = F.interpolate(grid, size=(16, 8), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).reshape(128, -1)
    assert vit.pos_embed.shape == (1, 129, 192)
    assert torch.equal(vit.pos_embed[0, :1], old[0, :1]) and torch.allclose(vit.pos_embed[0, 1:], want)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in vit.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
    assert vit.forward_features(torch.zeros(1, 3, 256, 128)).shape == (1, 129, 192)


def _tiny_sentence_encoder(folder: Path) -> Path:
    """A real sentence-transformers model, tiny and random (no download): BERT with 1 layer, mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *["a", "pedestrian", "wearing", "hat", "with", "long", "hair", "female"],
    ]
    (folder / "bert").mkdir(parents=True)
    (folder / "bert" / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(folder / "bert")
    BertTokenizerFast(str(folder / "bert" / "vocab.txt")).save_pretrained(folder / "bert")
    tower = Transformer(str(folder / "bert"))
    SentenceTransformer(modules=[tower, Pooling(16, "mean")]).save(str(folder / "st"))
    return folder / "st"


def test_vtb_phrases_are_data_and_their_vectors_are_cached(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    import baselines.vtb as vtb

    pa = load_card("PA100k")
    phrases, path = vtb.phrases_for(pa, vtb.VTBOptions())
    assert path.name == "pa100k.toml" and phrases[pa.attribute_names.index("Hat")] == "hat"
    assert phrases[pa.attribute_names.index("Female")] == "female"
    syn = load_card("synthetic")  # no phrase file: the card's sentences
    assert vtb.phrases_for(syn, vtb.VTBOptions())[0] == [a.positive for a in syn.attributes]
    encoder = _tiny_sentence_encoder(tmp_path)
    opts = vtb.VTBOptions(text_encoder=str(encoder), text_dim=16)
    vec = vtb.text_vectors(syn, opts)
    want = SentenceTransformer(str(encoder), device="cpu").encode([a.positive for a in syn.attributes])
    assert vec.shape == (12, 16) and np.allclose(vec, want, atol=1e-6)
    monkeypatch.setattr(vtb, "encode_phrases", lambda *a: pytest.fail("the cached vectors are not reused"))
    assert np.array_equal(vtb.text_vectors(syn, opts), vec)
    np.save(tmp_path / "bad.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(ParbenchError, match=r"bad.npy: 12 x D finite embeddings"):
        vtb.text_vectors(syn, vtb.VTBOptions(text_vectors=str(tmp_path / "bad.npy")))
    # a card's phrase file is part of a VTB run's identity: edit it and the run is another one
    cards = tmp_path / "cards"
    (cards / "phrases").mkdir(parents=True)
    (cards / "mine.toml").write_text(Path(syn.path).read_text().replace('name = "synthetic"', 'name = "mine-syn"'))
    (cards / "phrases" / "mine.toml").write_text("[phrases]\n" + "".join(f'{a} = "{a}"\n' for a in syn.attribute_names))
    spec = RunSpec(dataset=str(cards / "mine.toml"), method="vtb", backbone="timm:test_vit", pretrained="none")
    first = spec.identity()
    assert list(first["method_files"]) == ["mine.toml"]
    (cards / "phrases" / "mine.toml").write_text(
        (cards / "phrases" / "mine.toml").read_text().replace('hat = "hat"', 'hat = "a hat"')
    )
    assert spec.identity()["method_files"] != first["method_files"]


def test_recipes_variants_and_dataset_recipes():
    sb = get_method("strong-baseline")
    cfg, _ = resolve_config(sb, {}, "PETA")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == ("adam", 1e-4, 5e-4, 64, 30)
    assert (cfg.schedule, cfg.plateau_factor, cfg.plateau_patience, cfg.clip_grad_scope) == ("plateau", 0.1, 4, "model")
    assert cfg.drop_last and not cfg.ema and cfg.select_on == "auto" and cfg.select_protocol == "rethinking"
    assert resolve_config(sb, {}, "PA100k")[0].ema  # their PA100k config turns EMA on
    assert not resolve_config(sb, {"ema": "false"}, "PA100k")[0].ema  # the user has the last word
    ref, _ = resolve_config(sb, {"variant": "reference"}, "PETA")
    assert (ref.train_split, ref.select_on) == ("trainval", "test")
    v, _ = resolve_config(get_method("vtb"), {}, "PETA")
    assert (v.optimizer, v.lr, v.weight_decay, v.momentum, v.batch_size, v.epochs, v.clip_grad) == (
        "sgd",
        8e-3,
        1e-4,
        0.9,
        128,
        20,
        0.0,
    )
    assert (v.warmup_epochs, v.warmup_lr_init, v.min_lr) == (5, 0.01, 0.002)  # timm's cosine, as VTB creates it
    # both authors' loops run fp32: no bf16 autocast unless asked for (a reference variant never by default)
    vr, _ = resolve_config(get_method("vtb"), {"variant": "reference"}, "RAPv1")
    assert not (cfg.amp or ref.amp or v.amp or vr.amp)
    assert resolve_config(sb, {"amp": "true"}, "PETA")[0].amp
    # VTB's code selects nothing (test printed every epoch; the last model remains) and keeps RAP's raw 2
    assert (vr.train_split, vr.select_on, vr.track_test, vr.unspecified) == ("trainval", "last", True, "stored")
    assert v.unspecified == "negative"


def test_settings_added_later_leave_existing_identities_alone():
    spec = RunSpec(dataset="synthetic", method="finetune", backbone="parbench-tiny")
    train = spec.identity()["train"]
    assert not {"ema", "schedule", "drop_last", "clip_grad_scope"} & set(train)
    ema = RunSpec(dataset="synthetic", method="finetune", backbone="parbench-tiny", overrides={"ema": True})
    assert ema.identity()["train"]["ema"] is True and ema.key() != spec.key()


def test_weight_ema_equals_timms_model_ema_v2():
    from timm.utils import ModelEmaV2

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    theirs = ModelEmaV2(model, decay=0.9)
    ours = WeightEMA(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
        theirs.update(model)
        ours.update(model)
    for k, v in theirs.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(ours.shadow[k], v, atol=1e-7), k
    with ours.applied(model):
        assert torch.equal(model[0].weight, ours.shadow["0.weight"])
    assert not torch.equal(model[0].weight, ours.shadow["0.weight"])  # the trained weights again


class _Head(nn.Module):
    """Two groups (a, b), as feature methods' heads are trained: inputs are tensors."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.a, self.b = nn.Linear(4, k), nn.Linear(4, k, bias=False)
        self.num_attributes = k

    def forward(self, x):
        return {"logits": self.a(x) + self.b(x)}

    def param_groups(self, cfg):
        return [
            {"params": list(self.a.parameters()), "lr": cfg.lr, "weight_decay": 0.0},
            {"params": list(self.b.parameters()), "lr": cfg.lr, "weight_decay": 0.0},
        ]


def _tensors(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) * 50
    y = (torch.rand(n, 3, generator=g) < 0.5).long()
    return torch.utils.data.TensorDataset(x, y, torch.arange(n))


@pytest.mark.parametrize("scope", ["group", "model"])
def test_one_clip_over_the_model_or_one_per_group(scope):
    torch.manual_seed(0)
    model = _Head()
    w0 = [p.detach().clone() for p in model.parameters()]
    data = _tensors(8)
    pos = np.full(3, 0.5, np.float32)
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        lr=1.0,
        min_lr=1.0,
        clip_grad=0.5,
        clip_grad_scope=scope,
        device="cpu",
    )
    ref = _Head()
    ref.load_state_dict(model.state_dict())
    x, y, _ = data.tensors
    from parbench.engine.loss import weighted_bce

    weighted_bce(ref(x)["logits"], y, torch.as_tensor(pos)).backward()
    grads = [p.grad for p in ref.parameters()]
    if scope == "model":
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        want = [w - g * min(1.0, 0.5 / (float(norm) + 1e-6)) for w, g in zip(w0, grads, strict=True)]
    else:
        na = torch.sqrt(sum(g.pow(2).sum() for g in grads[:2]))
        nb = grads[2].norm()
        scales = [min(1.0, 0.5 / (float(na) + 1e-6))] * 2 + [min(1.0, 0.5 / (float(nb) + 1e-6))]
        want = [w - g * s for w, g, s in zip(w0, grads, scales, strict=True)]
    fit(model, data, None, pos, cfg, 0, torch.device("cpu"), "last")
    for p, w in zip(model.parameters(), want, strict=True):
        assert torch.allclose(p, w, atol=1e-5)


def test_plateau_follows_torchs_scheduler_on_the_selection_loss():
    torch.manual_seed(0)
    model = _Head()
    cfg = TrainConfig(
        epochs=8,
        batch_size=4,
        optimizer="adam",
        lr=20.0,
        weight_decay=0.0,
        schedule="plateau",
        plateau_factor=0.1,
        plateau_patience=1,
        device="cpu",
        clip_grad=0.0,
    )
    # a large lr makes the selection loss wander: it stops falling for two epochs, and the lr must fall then
    hist = fit(
        model, _tensors(16), _tensors(8, seed=1), np.full(3, 0.5, np.float32), cfg, 0, torch.device("cpu"), "val"
    )
    losses = [e["select"]["loss"] for e in hist.epochs]
    lrs = [e["lr"][0] for e in hist.epochs]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=20.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=1)
    replay = []
    for loss in losses:
        replay.append(opt.param_groups[0]["lr"])
        sched.step(loss)
    assert lrs == pytest.approx(replay) and min(lrs) < 20.0  # the lr fell where torch's would
    with pytest.raises(ParbenchError, match="warmup_epochs = 0 with schedule = plateau"):
        fit(
            _Head(),
            _tensors(8),
            None,
            np.full(3, 0.5, np.float32),
            TrainConfig(schedule="plateau", warmup_epochs=1, device="cpu"),
            0,
            torch.device("cpu"),
            "last",
        )


def test_drop_last_drops_the_smaller_last_batch():
    assert [len(b) for b in GlobalBatchSampler(70, 32, 0, 1, drop_last=True)] == [32, 32]
    assert [len(b) for b in GlobalBatchSampler(70, 32, 0, 1)] == [32, 32, 6]


def test_strong_baseline_trains_with_ema_and_reference_selection(tmp_path):
    spec = RunSpec(
        dataset="synthetic",
        method="strong-baseline",
        backbone="timm:test_resnet",
        pretrained="none",
        overrides={**FAST, "ema": True, "ema_decay": 0.5},
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    rec = run(spec)
    pre = json.loads(json.dumps(rec["preprocess"]))  # as the record file holds it
    assert pre["size"] == [256, 192] and pre["mean"] == [0.485, 0.456, 0.406]
    assert rec["preprocess"]["interpolation"] == "bilinear" and rec["trainable_params"] == rec["total_params"]
    assert rec["identity"]["train"]["ema"] is True and all("loss" in e["select"] for e in rec["history"])
    again = run(RunSpec(**{**spec.__dict__, "out": str(tmp_path / "again")}))  # the seed fixes everything
    assert json.dumps(again["metrics"], sort_keys=True) == json.dumps(rec["metrics"], sort_keys=True)
    ref = run(RunSpec(**{**spec.__dict__, "overrides": {**FAST, "variant": "reference"}}))
    assert ref["selected_on"] == "test" and ref["selected_on_test"]
    assert ref["config"]["train"]["train_split"] == "trainval"


def test_vtb_trains_and_only_the_intended_parameters_learn(tmp_path):
    encoder = _tiny_sentence_encoder(tmp_path / "enc")
    over = {
        **FAST,
        "epochs": 1,
        "text_encoder": str(encoder),
        "text_dim": 16,
        "height": 64,
        "width": 32,
        "variant": "reference",
    }
    rec = run(
        RunSpec(
            dataset="synthetic",
            method="vtb",
            backbone="timm:test_vit",
            pretrained="none",
            seed=3,
            overrides=over,
            out=str(tmp_path / "runs"),
            quiet=True,
        )
    )
    saved = torch.load(Path(rec["run_dir"]) / "trainable.pt", weights_only=True)["trainable"]
    assert list(rec["preprocess"]["size"]) == [64, 32] and list(rec["preprocess"]["mean"]) == [0.5, 0.5, 0.5]
    torch.manual_seed(3)  # the method's own init follows the run's seed: the unused fc as built
    assert "fc.weight" in saved and rec["trainable_params"] == rec["total_params"]
    from baselines.vtb import VTB, VTBOptions
    from parbench.backbones import create_backbone

    bb = create_backbone("timm:test_vit", "none", seed=3)
    torch.manual_seed(3)
    fresh = VTB(
        bb,
        load_card("synthetic"),
        VTBOptions(**{k: over[k] for k in ("text_encoder", "text_dim", "height", "width", "variant")}),
    )
    assert torch.equal(saved["fc.weight"], fresh.fc.weight)  # never run, no gradient, never decayed
    assert not torch.equal(saved["word_embed.weight"], fresh.word_embed.weight)  # what trains, trained
    assert math.isfinite(rec["metrics"]["promptpar"]["ma"]) and json.dumps(rec["identity"])


def test_the_field_baselines_suite_plans_the_grid(tmp_path):
    from collections import Counter

    from parbench.demo import suites_dir
    from parbench.suite import load_suite

    specs = load_suite(suites_dir() / "field-baselines.toml").specs
    per = Counter((s.method, s.overrides.get("variant"), s.backbone, s.pretrained) for s in specs)
    assert len(specs) == 3 * 2 * 7 * 3 and len(per) == 6 and set(per.values()) == {21}
    assert ("strong-baseline", "reference", "timm:resnet50", "tv_in1k") in per
    assert ("vtb", "fixed", "timm:vit_base_patch16_224", "jx_vit_base_p16_224-80ecf9dd.pth") in per
    demo = load_suite(suites_dir() / "demo.toml").specs
    assert {s.backbone for s in demo if s.method == "vtb"} == {"timm:test_vit"}
    bad = tmp_path / "bad.toml"
    bad.write_text('datasets = ["synthetic"]\nmethods = ["vtb"]\n[methods_set.vtb]\npretrained = "x.pth"\n')
    with pytest.raises(ParbenchError, match=r"\[methods_set.vtb\] pretrained together with its backbone"):
        load_suite(bad)
