"""Foundation models: person-pretrained towers from weights files in their projects' own layouts (key maps as
data), the foundation suite, and the report's foundation and prompt-sensitivity tables."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from parbench.backbones import create_backbone
from parbench.errors import ParbenchError

ROOT = Path(__file__).resolve().parent.parent


def _timm(arch: str, seed: int, **kw):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(arch, num_classes=0, **kw).eval()


def _same_tower(backbone, reference) -> None:
    got, want = backbone.model.state_dict(), reference.state_dict()
    keys = [k for k in want if not k.endswith(("relative_position_index", "attn_mask"))]
    assert sorted(k for k in got if k in keys) == sorted(keys)
    for k in keys:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    backbone.model.eval()  # Swin draws stochastic depth in training mode
    x = torch.randn(2, 3, *backbone.preprocess.size)
    with torch.no_grad():
        torch.testing.assert_close(backbone.model(x), reference(x), rtol=0, atol=0)


def test_a_hap_file_loads_as_a_timm_vit_at_256_by_128(tmp_path):
    """HAP's release is MAE's layout (a `model` dict; encoder keys as timm's, plus the decoder and mask token)."""
    ref = _timm("vit_small_patch16_224", 1, img_size=(256, 128))
    sd = dict(ref.state_dict())
    sd.update({"mask_token": torch.zeros(1, 1, 384), "decoder_embed.weight": torch.randn(8, 384)})
    torch.save({"model": sd, "epoch": 400}, tmp_path / "hap.pth")
    bb = create_backbone("timm:vit_small_patch16_224", f"hap:{tmp_path / 'hap.pth'}")
    assert bb.preprocess.size == (256, 128)
    _same_tower(bb, ref)


def _to_mmdet_swin(timm_sd: dict) -> OrderedDict:
    """A timm Swin's weights in MMDetection's layout, written here from MMDetection's own conversion (their
    swin_converter, original -> mmdet: renames, and the patch-merging channels in nn.Unfold's order), after
    undoing timm's move of each downsample to the next stage: what SOLIDER's released files hold."""

    def unfold_reduction(x):
        out_c, in_c = x.shape
        return x.reshape(out_c, 4, in_c // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_c, in_c)

    def unfold_norm(x):
        (in_c,) = x.shape
        return x.reshape(4, in_c // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(in_c)

    original = OrderedDict()
    for k, v in timm_sd.items():
        if k.endswith(("relative_position_index", "attn_mask")):
            continue
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        original[k] = v
    out = OrderedDict()
    for k, v in original.items():
        if k.startswith("layers"):
            if "attn." in k:
                k = k.replace("attn.", "attn.w_msa.")
            elif "mlp.fc1." in k:
                k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
            elif "mlp.fc2." in k:
                k = k.replace("mlp.fc2.", "ffn.layers.1.")
            elif "downsample" in k:
                v = unfold_reduction(v) if "reduction." in k else unfold_norm(v)
            k = k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed") and "proj" in k:
            k = k.replace("proj", "projection")
        elif k.startswith("norm."):
            k = k.replace("norm.", "norm3.")
        out["backbone." + k] = v
    return out


def test_a_solider_file_in_mmdetections_layout_loads_as_the_same_timm_swin(tmp_path):
    ref = _timm("swin_tiny_patch4_window7_224", 2)
    sd = _to_mmdet_swin(ref.state_dict())
    sd["backbone.semantic_embed_w.0.weight"] = torch.randn(96, 2)  # SOLIDER's semantic controller, left out
    sd["backbone.norm0.weight"] = torch.randn(96)  # an output norm of an early stage, left out
    torch.save({"teacher": sd}, tmp_path / "swin_tiny_tea.pth")
    bb = create_backbone("timm:swin_tiny_patch4_window7_224", f"solider:{tmp_path / 'swin_tiny_tea.pth'}")
    _same_tower(bb, ref)


def test_key_map_errors_say_where_they_looked_and_what_fits(tmp_path):
    with pytest.raises(ParbenchError, match=r"the solider weights file .*looked for .*missing.pth; found no such file"):
        create_backbone("timm:swin_tiny_patch4_window7_224", f"solider:{tmp_path / 'missing.pth'}")
    torch.save({"model": {}}, tmp_path / "x.pth")
    with pytest.raises(ParbenchError, match=r"a timm architecture among \['vit_\*_patch16_224'\]"):
        create_backbone("timm:resnet18", f"hap:{tmp_path / 'x.pth'}")
    ref = _timm("swin_tiny_patch4_window7_224", 2)
    sd = _to_mmdet_swin(ref.state_dict())
    sd.pop("backbone.norm3.weight")
    torch.save({"teacher": sd}, tmp_path / "cut.pth")
    with pytest.raises(ParbenchError, match=r"cut.pth: weights for timm swin_tiny_patch4_window7_224"):
        create_backbone("timm:swin_tiny_patch4_window7_224", f"solider:{tmp_path / 'cut.pth'}")


def test_a_key_mapped_file_is_part_of_the_run_identity(tmp_path):
    from parbench.engine.spec import RunSpec

    ref = _timm("vit_small_patch16_224", 1, img_size=(256, 128))
    torch.save({"model": ref.state_dict()}, tmp_path / "hap.pth")
    spec = lambda: RunSpec(
        "synthetic", "linear-probe", backbone="timm:vit_small_patch16_224", pretrained=f"hap:{tmp_path / 'hap.pth'}"
    )
    first = spec().identity()["weights"]
    assert first.startswith("hap:") and ":sha256:" in first
    ref2 = _timm("vit_small_patch16_224", 3, img_size=(256, 128))
    torch.save({"model": ref2.state_dict()}, tmp_path / "hap.pth")
    assert spec().identity()["weights"] != first


def test_the_foundation_suite_plans_every_model_and_method():
    from parbench.suite import load_suite

    suite = load_suite(ROOT / "suites" / "foundation.toml")
    got = {(s.method, s.backbone, s.pretrained) for s in suite.specs}
    towers = {(b, p) for _, b, p in got}
    assert ("zeroshot", "ViT-L-14", "openai") in got and ("linear-probe", "ViT-L-14", "openai") in got
    assert any(b.startswith("timm:vit_base_patch14_dinov2") for b, _ in towers)
    assert any(p and p.startswith("hap:") for _, p in towers) and any(p and p.startswith("solider:") for _, p in towers)
    assert not any(m == "zeroshot" and b.startswith("timm:") for m, b, _ in got)  # image towers alone: probe only
    assert {s.dataset for s in suite.specs} >= {"PETA", "PA100k", "RAPv2"}
    import open_clip
    import timm

    from parbench.backbones.keymaps import split

    for backbone, pretrained in towers:  # every model and tag named is one its library knows
        if backbone.startswith("timm:"):
            arch = backbone.removeprefix("timm:")
            keymap, _ = split(pretrained)
            assert keymap or f"{arch}.{pretrained}" in timm.list_pretrained(f"{arch}.*"), (arch, pretrained)
        else:
            assert pretrained in open_clip.list_pretrained_tags_by_model(backbone), (backbone, pretrained)
    zs = [s for s in suite.specs if s.method == "zeroshot"]
    assert len(zs) == 7 * 4 * 6 and {s.seed for s in zs} == {0}  # datasets x models x prompt sets, one seed


@pytest.mark.slow
def test_a_tiny_foundation_suite_runs_and_the_report_compares_towers_and_prompt_sets(tmp_path):
    """The foundation suite's shape at tiny size: zero-shot under several prompt sets (one seed) and a linear probe of
    two towers (a CLIP-style and a timm one); the report's foundation and prompt-sensitivity tables."""
    from parbench.report.render import render_report
    from parbench.suite import load_suite, run_suite

    path = tmp_path / "foundation-tiny.toml"
    path.write_text(
        'datasets = ["synthetic"]\nmethods = ["zeroshot", "linear-probe"]\nbackbones = ["parbench-tiny"]\n'
        'pretrained = "none"\nseeds = [0, 1]\n[set]\nlimit = 48\nepochs = 2\nbootstrap = 0\n'
        '[methods_set.zeroshot]\nseeds = [0]\ngrid = { prompt_set = ["card", "photo", "ensemble"] }\n'
        '[methods_set.linear-probe]\nbackbones = [["parbench-tiny", "none"], ["timm:test_vit", "none"]]\n'
    )
    suite = load_suite(path, store=str(tmp_path / "s.sqlite"), out=str(tmp_path / "runs"))
    assert len(suite.specs) == 3 + 2 * 2
    run_suite(suite, suite.specs, quiet=True)
    page = render_report(suite.store, tmp_path / "rep", include_smoke=True).read_text()
    found = page[
        page.index('id="foundation-promptpar"') : page.index("</section>", page.index('id="foundation-promptpar"'))
    ]
    assert "timm:test_vit" in found and "parbench-tiny" in found and "ensemble" in found
    prompts = page[page.index('id="prompt-sensitivity-promptpar"') :]
    assert all(f"<th>{s}</th>" in prompts for s in ("card", "photo", "ensemble"))
