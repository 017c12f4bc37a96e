"""Real CLIP shapes against an independent implementation: OpenAI's own CLIP code (`openai-clip` on PyPI).

ViT-B/16 with random weights, saved the way OpenAI's code leaves them (its convert_weights: fp16 linear and
conv weights, fp32 norms and embeddings). parbench must give the same image and text features as OpenAI's
`build_model` of the same state dict, which needs QuickGELU; with nn.GELU the features move by ~1e-2. Then a
PromptPAR checkpoint in the reference's exact save layout around that CLIP must import and predict.
"""

import json

import numpy as np
import pytest
import torch

clip = pytest.importorskip("clip", reason="openai-clip (test extra) is not installed")
from clip import model as openai_model  # noqa: E402

from parbench.backbones import create_backbone  # noqa: E402
from parbench.cards import load_card  # noqa: E402

VIT_B_16 = dict(
    embed_dim=512,
    image_resolution=224,
    vision_layers=12,
    vision_width=768,
    vision_patch_size=16,
    context_length=77,
    vocab_size=49408,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory):
    """(path, OpenAI CLIP in fp32 built by OpenAI's build_model from the saved state dict)."""
    torch.manual_seed(0)
    model = openai_model.CLIP(**VIT_B_16)
    with torch.no_grad():  # OpenAI's init leaves norms at 1/0: make them count too
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    openai_model.convert_weights(model)  # what OpenAI's code (and a CUDA run of the reference) leaves
    path = tmp_path_factory.mktemp("openai") / "ViT-B-16.pt"
    sd = model.state_dict()
    torch.save(sd, path)
    ref = openai_model.build_model({k: v.clone() for k, v in sd.items()}).float().eval()
    return path, ref


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 224, 224, generator=g)
    text = clip.tokenize(["A pedestrian wearing a hat", "A male pedestrian with a backpack"])
    return images, text


def _features(model, images, text):
    with torch.no_grad():
        return model.encode_image(images).float(), model.encode_text(text).float()


@pytest.mark.slow
def test_state_dict_file_matches_openai_clip_with_quickgelu(openai_file, inputs, capsys):
    path, ref = openai_file
    want_img, want_txt = _features(ref, *inputs)
    bb = create_backbone("ViT-B-16-quickgelu", str(path))
    assert bb.activation == "quickgelu"
    img, txt = _features(bb.model.eval(), *inputs)
    torch.testing.assert_close(img, want_img, rtol=0, atol=1e-5)
    torch.testing.assert_close(txt, want_txt, rtol=0, atol=1e-5)
    # the same file under the GELU config: the activation is recorded and the features are measurably off
    gelu = create_backbone("ViT-B-16", str(path))
    assert gelu.activation == "gelu"
    assert "ViT-B-16-quickgelu" in capsys.readouterr().err  # the hint for OpenAI files
    img_g, txt_g = _features(gelu.model.eval(), *inputs)
    assert (img_g - want_img).abs().max() > 1e-3 and (txt_g - want_txt).abs().max() > 1e-3


@pytest.mark.slow
def test_openai_tag_builds_quickgelu(openai_file, inputs, monkeypatch):
    """An `openai` tag takes its pretrained config's quick_gelu, whatever the model name's config says.
    The download itself is replaced by the local file (no network here); everything after it is open_clip's."""
    import open_clip.factory

    path, ref = openai_file
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, **kw: str(path))
    bb = create_backbone("ViT-B-16", "openai")
    assert bb.activation == "quickgelu"
    img, txt = _features(bb.model.eval(), *inputs)
    want_img, want_txt = _features(ref, *inputs)
    torch.testing.assert_close(img, want_img, rtol=0, atol=1e-5)
    torch.testing.assert_close(txt, want_txt, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_openai_jit_archive_is_quickgelu(openai_file, inputs, tmp_path):
    _, ref = openai_file
    images, text = inputs
    traced = torch.jit.trace(ref, (images[:1], text[:1]), check_trace=False)
    jit_path = tmp_path / "ViT-B-16-jit.pt"
    torch.jit.save(traced, str(jit_path))
    bb = create_backbone("ViT-B-16", str(jit_path))  # a GELU name: the archive's origin decides
    assert bb.activation == "quickgelu"
    img, txt = _features(bb.model.eval(), images, text)
    want_img, want_txt = _features(ref, images, text)
    torch.testing.assert_close(img, want_img, rtol=0, atol=1e-5)
    torch.testing.assert_close(txt, want_txt, rtol=0, atol=1e-5)


def _reference_checkpoint(
    clip_sd: dict,
    card,
    text_width: int,
    out_dim: int,
    layers_text: int,
    seed: int = 0,
    readme: bool = True,
    visual_tokens: int = 257,
) -> dict:
    """A PromptPAR checkpoint laid out exactly as the reference's train.py saves it, written key by key here
    (not through parbench's exporter): the whole CLIP with the prompt tensors inside it, the fusion model's
    state dict, the fusion SGD state, and `result` as its metrics EasyDict of numpy values."""
    import easydict

    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.05
    A, D = card.num_attributes, 768
    width = clip_sd["visual.conv1.weight"].shape[0]
    clip_model = dict(clip_sd)
    clip_model["visual.transformer.prompt_deep"] = r(24, 50, 1, width)  # allocated for vis_depth=24 rows
    clip_model["transformer.prompt_text_deep"] = r(layers_text, 3 if readme else 0, A, text_width)
    if readme:
        clip_model["visual.part_class_embedding"] = r(4, width)
        clip_model["softmax_model.temperature"] = torch.tensor(1.0)
        for k, v in (
            ("weight", torch.ones(A)),
            ("bias", torch.zeros(A)),
            ("running_mean", r(A)),
            ("running_var", torch.ones(A) + r(A).abs()),
            ("num_batches_tracked", torch.tensor(7)),
        ):
            clip_model[f"agg_bn.{k}"] = v
    fusion = {
        "word_embed.weight": r(D, out_dim),
        "word_embed.bias": r(D),
        "visual_embed.weight": r(D, out_dim),
        "visual_embed.bias": r(D),
        "norm.weight": 1 + r(D),
        "norm.bias": r(D),
    }
    if readme:
        for k, shape in (
            ("norm1.weight", (D,)),
            ("norm1.bias", (D,)),
            ("attn.qkv.weight", (3 * D, D)),
            ("attn.qkv.bias", (3 * D,)),
            ("attn.proj.weight", (D, D)),
            ("attn.proj.bias", (D,)),
            ("norm2.weight", (D,)),
            ("norm2.bias", (D,)),
            ("mlp.fc1.weight", (4 * D, D)),
            ("mlp.fc1.bias", (4 * D,)),
            ("mlp.fc2.weight", (D, 4 * D)),
            ("mlp.fc2.bias", (D,)),
        ):
            fusion[f"blocks.0.{k}"] = r(*shape) + (1.0 if "norm" in k and k.endswith("weight") else 0.0)
    else:
        fusion["linear_layer.weight"] = r(A, A + visual_tokens + 50)
        fusion["linear_layer.bias"] = r(A)
    for i in range(A):
        fusion[f"weight_layer.{i}.weight"] = r(1, D)
        fusion[f"weight_layer.{i}.bias"] = r(1)
    fusion.update(
        {
            "bn.weight": 1 + r(A).abs(),
            "bn.bias": r(A),
            "bn.running_mean": r(A),
            "bn.running_var": 1 + r(A).abs(),
            "bn.num_batches_tracked": torch.tensor(7),
        }
    )
    result = easydict.EasyDict(
        ma=np.float64(0.61),
        label_ma=np.linspace(0.5, 0.7, A),
        instance_acc=np.float64(0.4),
        label_pos_recall=np.linspace(0.1, 0.9, A),
    )
    optimizer = {
        "state": {0: {"momentum_buffer": r(D, out_dim)}},
        "param_groups": [
            {
                "lr": 8e-3,
                "momentum": 0.9,
                "dampening": 0,
                "weight_decay": 1e-4,
                "nesterov": False,
                "maximize": False,
                "foreach": None,
                "differentiable": False,
                "fused": None,
                "initial_lr": 8e-3,
                "params": [0],
            }
        ],
    }
    return {
        "epoch": 12,
        "optimizer": optimizer,
        "model_state_dict": fusion,
        "clip_model": clip_model,
        "result": result,
    }


def _images(root, n, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(120, 200)), int(rng.integers(40, 90))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i + 1:05d}.png")


@pytest.mark.slow
def test_reference_layout_checkpoint_around_openai_clip_imports_and_predicts(openai_file, tmp_path):
    from typer.testing import CliRunner

    from parbench.cli import app
    from parbench.engine.restore import restore
    from tests.fixtures import originals

    path, ref = openai_file
    card = load_card("PETA")
    ckpt = _reference_checkpoint(torch.load(path, weights_only=True), card, 512, 512, 12)
    assert ckpt["clip_model"]["visual.conv1.weight"].dtype == torch.float16  # as a CUDA run leaves them
    file = tmp_path / "epoch12.pth"
    torch.save(ckpt, file)  # a plain torch.save: pickle protocol 2, numpy data through _codecs.encode
    root = tmp_path / "PETA"
    root.mkdir()
    originals.peta(root, n=20, seed=3)
    _images(root, 20)
    res = CliRunner().invoke(
        app,
        ["eval", "--checkpoint", str(file), "--dataset", "PETA", "--root", str(root), "--set", "device=cpu", "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["format"] == "reference" and out["activation"] == "quickgelu"
    assert out["inferred"]["backbone"] == "ViT-B-16"
    assert out["inferred"]["defaults"]["use_vismask"] is True
    assert out["preprocess"]["interpolation"] == "bilinear" and out["preprocess"]["mean"] == [0.5] * 3
    assert 0.0 <= out["metrics"]["promptpar"]["ma"] <= 1.0
    # the imported CLIP computes the attribute sentences' features as OpenAI's code does (QuickGELU, keys)
    r = restore(file, dataset="PETA", overrides={"device": "cpu"})
    with torch.no_grad():
        ours = r.model.encode_text().float()
        want = ref.encode_text(clip.tokenize(card.reference_texts())).float()
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)


def test_parser_default_checkpoint_imports(tmp_path):
    """The reference parser's defaults (every use_* off): no regions, no GL, empty text prompts, a Linear over
    the token axis. use_vismask cannot be read off tensors and is irrelevant without regions."""
    from parbench.engine.restore import restore

    card = load_card("PETA")
    tiny = create_backbone("parbench-tiny", "none")
    sd = tiny.model.state_dict()
    ckpt = _reference_checkpoint(sd, card, 64, 64, 2, readme=False)
    file = tmp_path / "epoch1.pth"
    torch.save(ckpt, file)
    r = restore(file, dataset="PETA", overrides={"device": "cpu"})
    assert r.inferred["read_off_tensors"]["use_div"] is False and "use_vismask" not in r.inferred["defaults"]
    assert r.inferred["backbone"] == "parbench-tiny"
    with torch.no_grad():
        logits = r.model(torch.randn(2, 3, 224, 224))["logits"]
    assert logits.shape == (2, 35) and torch.isfinite(logits).all()
