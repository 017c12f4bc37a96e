"""`parbench export` and `predict --model`: every demo method exports to ONNX (and TorchScript) and the exported
file, run by onnxruntime through the run's own preprocessing, reproduces the run's test predictions."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from parbench.data import load_dataset
from parbench.engine.run import RunSpec, run
from parbench.errors import ParbenchError
from parbench.export import export_run, read_metadata
from parbench.predict import predict_exported
from parbench.suite import load_suite

FAST = {"epochs": 1, "limit": 24, "batch_size": 8, "eval_batch_size": 24, "bootstrap": 0}


def _demo_spec(method: str, out: Path) -> RunSpec:
    """The demo's own configuration of a method (its backbone, tiny settings), shortened further."""
    from parbench.demo import suites_dir

    spec = next(s for s in load_suite(suites_dir() / "demo.toml").specs if s.method == method and s.seed == 0)
    over = {**spec.overrides, **FAST, "cache_images": "off"}
    if method == "vtb":  # phrase vectors from a file: the demo's tiny-CLIP encoder would pretrain it here (a minute)
        vectors = out.parent / "phrases.npy"
        np.save(vectors, np.random.default_rng(0).standard_normal((12, 64)).astype(np.float32))
        over["text_vectors"] = str(vectors)
    return RunSpec(
        dataset="synthetic",
        method=method,
        backbone=spec.backbone,
        pretrained="none",
        overrides=over,
        out=str(out),
        quiet=True,
    )


DEMO_METHODS = ["linear-probe", "finetune", "zeroshot", "promptpar", "lora", "vpt-deep", "strong-baseline", "vtb"]


@pytest.mark.slow
@pytest.mark.parametrize("method", DEMO_METHODS)
def test_every_demo_method_exports_and_the_file_reproduces_the_run(tmp_path, method):
    spec = _demo_spec(method, tmp_path / "runs")
    if method == "promptpar":
        spec.overrides["variant"] = "reference"  # both PromptPAR variants export: the fixed one is the demo's
    rec = run(spec)
    res = export_run(rec["run_dir"], "onnx", tmp_path / "model.onnx")
    assert res["max_abs_diff"] <= 1e-4 and (method != "lora" or res["lora_layers_merged"] > 0)
    meta = read_metadata(tmp_path / "model.onnx")
    assert meta["attributes"] == rec["attributes"] and meta["thresholds"] == {"promptpar": 0.45, "rethinking": 0.5}
    assert meta["preprocess"] == json.loads(json.dumps(rec["preprocess"])) and meta["run"]["method"] == method
    saved = np.load(Path(rec["run_dir"]) / "predictions.npz")
    ds = load_dataset("synthetic")
    files = [ds.image_paths[i] for i in saved["index"]]
    mine = predict_exported(tmp_path / "model.onnx", files)
    assert mine["probs"].shape == saved["probs"].shape
    np.testing.assert_allclose(mine["probs"], saved["probs"], atol=1e-4)  # onnxruntime == the run's own eval


def test_torchscript_export_carries_its_metadata_beside_it(tmp_path):
    rec = run(_demo_spec("strong-baseline", tmp_path / "runs"))
    res = export_run(rec["run_dir"], "torchscript", tmp_path / "model.pt")
    assert res["max_abs_diff"] <= 1e-4 and (tmp_path / "model.json").is_file()
    assert read_metadata(tmp_path / "model.pt")["preprocess"]["size"] == [96, 48]
    ds = load_dataset("synthetic")
    saved = np.load(Path(rec["run_dir"]) / "predictions.npz")
    out = predict_exported(tmp_path / "model.pt", [ds.image_paths[i] for i in saved["index"]], protocol="rethinking")
    np.testing.assert_allclose(out["probs"], saved["probs"], atol=1e-4)
    assert out["threshold"] == 0.5
    assert read_metadata(tmp_path / "model.pt")["run"]["key"] == rec["key"]  # the run's identity travels
    # a file whose outputs are not the attributes its metadata names is refused, not written out shifted
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["parbench_attributes"] = json.dumps(json.loads(meta["parbench_attributes"])[:-1])
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ParbenchError, match=r"model.pt: 1 x 11 probabilities .*; found outputs of shape \(1, 12\)"):
        predict_exported(tmp_path / "model.pt", [ds.image_paths[0]])


PROBE_WITH = """
import torch
import torch.nn as nn
from parbench.api import freeze, plain_method


class Probe(nn.Module):
    def __init__(self, backbone, k):
        super().__init__()
        self.visual = freeze(backbone.visual)
        self.fc = nn.Linear(backbone.embed_dim, k)

    def forward(self, images):
        z = self.fc(self.visual(images).float())
        return {tail}


SPEC = plain_method("{name}", lambda backbone, card, options: Probe(backbone, card.num_attributes), recipe={{"epochs": 1}})
"""


def _plugin_run(tmp_path, name: str, tail: str) -> dict:
    """A finished run of a probe plugin whose logits are `tail` of its linear outputs z."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PROBE_WITH.format(name=name, tail=tail)))
    spec = RunSpec(
        "synthetic",
        f"{tmp_path / name}.py:SPEC",
        backbone="parbench-tiny",
        overrides=FAST,
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    return run(spec)


def test_a_failed_parity_check_leaves_the_file_already_there(tmp_path):
    rec = _plugin_run(tmp_path, "baked", "z + float(images.shape[0])  # a batch size the export bakes in")
    mine = tmp_path / "model.onnx"
    mine.write_bytes(b"the user's earlier export")
    with pytest.raises(ParbenchError, match=r"method baked: an export that matches the eager model.*nothing written"):
        export_run(rec["run_dir"], "onnx", mine)
    assert mine.read_bytes() == b"the user's earlier export" and not list(tmp_path.glob(".model.onnx*"))


def test_a_method_that_cannot_export_says_so_and_leaves_no_file(tmp_path):
    no_onnx_operator = "z + 0.0 * torch.special.zeta(z.detach().abs() + 2.0, torch.tensor(2.0))"
    rec = _plugin_run(tmp_path, "odd", no_onnx_operator)
    with pytest.raises(ParbenchError, match=r"method odd: a model that onnx can export; found .*zeta"):
        export_run(rec["run_dir"], "onnx", tmp_path / "odd.onnx")
    assert not (tmp_path / "odd.onnx").exists() and not list(tmp_path.glob(".odd.onnx*"))
    with pytest.raises(ParbenchError, match=r"--format: one of onnx, torchscript"):
        export_run(rec["run_dir"], "tflite", tmp_path / "odd.tflite")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ParbenchError, match=r"junk.onnx: an ONNX model"):
        read_metadata(tmp_path / "junk.onnx")
