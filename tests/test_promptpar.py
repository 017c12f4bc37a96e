"""PromptPAR: reference parameter counts, token layout, mask, regions, gradients per variant."""

import pytest
import torch

from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.info import method_info
from promptpar.config import PromptParConfig
from promptpar.layout import make_layout
from promptpar.method import build

REFERENCE_COUNTS = {
    "PETA": (438_114_737, 3_413_424),
    "PA100k": (437_858_948, 3_157_635),
    "RAPv1": (438_569_473, 3_868_160),
    "RAPv2": (438_654_736, 3_953_423),
    "RAP-ZS": (438_626_315, 3_925_002),
    "WIDER": (437_517_896, 2_816_583),
}


@pytest.mark.parametrize("dataset", list(REFERENCE_COUNTS))
def test_reference_parameter_counts(dataset):
    info = method_info("promptpar", "ViT-L-14", dataset, None, {"variant": "reference"})
    assert (info["total_params"], info["trainable_params"]) == REFERENCE_COUNTS[dataset]


def test_fixed_variant_freezes_fusion_norms():
    ref = method_info("promptpar", "ViT-L-14", "PETA", None, {"variant": "reference"})
    fixed = method_info("promptpar", "ViT-L-14", "PETA", None, {"variant": "fixed"})
    assert fixed["total_params"] == ref["total_params"]
    # norm1, norm2 and the final norm of the fusion block, and the 35 head biases in front of BatchNorm
    assert ref["trainable_params"] - fixed["trainable_params"] == 3 * 2 * 768 + 35


def test_layout_matches_reference_indices():
    lay = make_layout(16, 50, True, 4, 2, fixed=False)
    assert lay.length == 311 and lay.prefix == 55
    assert [lay.part_index(k) for k in range(1, 5)] == [11, 22, 33, 44]
    assert lay.prompt_positions()[:10] == list(range(1, 11)) and lay.prompt_positions()[10:12] == [12, 13]
    assert lay.region_rows == ((0, 5), (3, 9), (7, 13), (11, 16))
    assert [(r.start, r.stop - 1) for r in map(lay.region_tokens, range(1, 5))] == [
        (55, 134),
        (103, 198),
        (167, 262),
        (231, 310),
    ]
    assert make_layout(16, 50, True, 4, 2, fixed=True).region_rows == lay.region_rows


def test_mask_rows():
    m = make_layout(16, 50, True, 4, 2, fixed=False).mask()
    seen = lambda r: set(torch.nonzero(m[r]).flatten().tolist())
    assert seen(11) == set(range(11, 22)) | set(range(55, 135))
    assert seen(21) == seen(11)
    assert seen(54) == set(range(44, 55)) | set(range(231, 311))
    assert seen(0) == set(range(311)) and seen(5) == set(range(311)) and seen(200) == set(range(311))


def test_geometry_for_other_grids():
    lay = make_layout(12, 40, True, 3, 2, fixed=True)
    assert lay.region_rows == ((0, 5), (3, 9), (7, 12))
    from parbench.errors import ParbenchError

    with pytest.raises(ParbenchError, match="hard-codes"):
        make_layout(12, 40, True, 3, 2, fixed=False)
    # the reference on a 14-wide grid (ViT-B/16 at 224): its literal offsets 0/48/112/176 and row counts 4/5/5/4
    # times 14, clipped to the 196 patches -- spans that no longer follow rows, as its code builds them
    ref = make_layout(14, 50, True, 4, 2, fixed=False)
    assert ref.spans == ((0, 56), (48, 118), (112, 182), (176, 196))
    m = ref.mask()
    assert set(torch.nonzero(m[44]).flatten().tolist()) == set(range(44, 55)) | set(range(55 + 176, 55 + 196))


def _tiny(variant, **kw):
    torch.manual_seed(0)
    bb = create_backbone("parbench-tiny")
    return build(
        bb, load_card("synthetic"), PromptParConfig(variant=variant, fusion_dim=32, fusion_heads=2, **kw)
    )


def _step(model):
    model.train()
    out = model(torch.randn(3, 3, 224, 224))
    y = torch.randint(0, 2, out["logits"].shape).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], y)
    loss = loss + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(out["aux"][0], y)
    loss.backward()


def test_fixed_variant_every_trainable_gets_gradient_and_no_frozen_does():
    model = _tiny("fixed")
    _step(model)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_reference_variant_text_prompts_receive_no_gradient():
    model = _tiny("reference")
    _step(model)
    g = model.prompt_text_deep.grad
    assert g is None or g.abs().sum() == 0
    assert model.prompt_deep.grad.abs().sum() > 0
    assert model.fusion.blocks[0].norm1.weight.requires_grad  # the reference's substring rule


def test_reference_gl_uses_last_sample_for_the_batch():
    model = _tiny("reference")
    model.eval()
    all_class = torch.randn(4, 5, model.clip.visual.output_dim)
    text = torch.randn(model.num_attributes, model.clip.visual.output_dim)
    a = model.aggregate(all_class, text)
    b = model.aggregate(torch.cat([torch.randn(3, 5, all_class.shape[-1]), all_class[3:]]), text)
    fixed = _tiny("fixed")
    fixed.eval()
    # the local term comes from the last sample only; the global term still differs per sample
    assert not torch.allclose(a, b)
    assert fixed.aggregate(all_class, text).shape == a.shape


def test_eval_caches_text_features():
    model = _tiny("fixed")
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 224, 224))
        cache = model._text_cache
        model(torch.randn(2, 3, 224, 224))
    assert cache is not None and model._text_cache is cache
