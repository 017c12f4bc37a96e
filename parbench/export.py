"""`parbench export`: a finished run (or an imported reference checkpoint) as a self-contained inference model.

The exported model takes a batch of images already resized and normalised as the run's preprocessing says
(N x 3 x H x W, any N) and returns per-attribute probabilities (N x K). What a deployment needs to reproduce the
benchmark travels in the file: the attribute names, both protocols' thresholds, the preprocessing (size, mean,
std, interpolation, letterbox) and the run's identity key, as ONNX `metadata_props` (or a JSON beside a
TorchScript file). LoRA's low-rank updates are merged into the weights first. The export is checked against the
eager model on a fixed batch before the file is written (written atomically: a method that cannot export leaves
no file, and the error names the method).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4  # the largest probability difference an export may show against the eager model
META_KEYS = ("parbench_attributes", "parbench_thresholds", "parbench_preprocess", "parbench_run")


def _probabilities(model):
    import torch

    class Probabilities(torch.nn.Module):
        """images (N, 3, H, W) -> sigmoid of the method's logits (N, K): what `predict` decides on."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return torch.sigmoid(self.net(images)["logits"].float())

    return Probabilities(model).eval()


def merge_adapters(model) -> int:
    """Merge LoRA updates into their base weights (W + (alpha / r) B A); returns how many layers merged."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return 0
    merged = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and not module.merged:
            module.merge()
            merged += 1
    return merged


def metadata(restored) -> dict[str, str]:
    from parbench.metrics import PROTOCOLS

    built = restored.built
    run = {
        "method": built.method.name,
        "dataset": built.card.name,
        "backbone": built.backbone.name,
        "source": restored.source,
        "key": restored.key,
    }
    return {
        "parbench_attributes": json.dumps(list(built.card.attribute_names)),
        "parbench_thresholds": json.dumps({name: p.threshold for name, p in PROTOCOLS.items()}),
        "parbench_preprocess": json.dumps(asdict(built.preprocess)),
        "parbench_run": json.dumps(run),
    }


def _export(module, example, tmp: str, meta: dict[str, str], fmt: str, name: str) -> None:
    """Write `module` in `fmt` to `tmp`; an operator the format lacks or a trace that fails is one error naming
    the method."""
    import torch

    try:
        if fmt == "onnx":
            _onnx(module, example, tmp, meta)
        else:
            with torch.no_grad():
                torch.jit.trace(module, (example,), check_trace=False).save(tmp)
    except ParbenchError:
        raise
    except Exception as e:
        raise ParbenchError(
            f"method {name}", f"a model that {fmt} can export", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from None


def _onnx(module, example, tmp: str, meta: dict[str, str]) -> None:
    import onnx
    import torch

    torch.onnx.export(
        module,
        (example,),
        tmp,
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["probs"],
        dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
    )
    proto = onnx.load(tmp)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, tmp)


def load_exported(path: str | Path) -> Callable[[Any], Any]:
    """A function from a float32 image batch to probabilities, running an exported file (onnxruntime on CPU for
    .onnx, else TorchScript)."""
    import numpy as np

    path = Path(path)
    if path.suffix == ".onnx":
        session = _session(path)
        return lambda x: session.run(None, {"images": np.ascontiguousarray(np.asarray(x, dtype=np.float32))})[0]
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise ParbenchError(path, "a TorchScript model written by parbench export", str(e).splitlines()[0]) from None

    def run(x):
        with torch.no_grad():
            return module(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()

    return run


def run_exported(path: str | Path, images) -> Any:
    """Probabilities from an exported file for one float32 batch."""
    return load_exported(path)(images)


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ParbenchError(path, "onnxruntime to run an ONNX file (pip install 'parbench[export]')", str(e)) from None
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # not an ONNX model, or a damaged one
        raise ParbenchError(path, "an ONNX model", f"{type(e).__name__}: {str(e)[:160]}") from None


def read_metadata(path: str | Path) -> dict:
    """The parbench metadata of an exported file: attributes, thresholds, preprocessing, run."""
    path = Path(path)
    if not path.is_file():
        raise ParbenchError(path, "an exported model file", "no such file")
    if path.suffix == ".onnx":
        raw = dict(_session(path).get_modelmeta().custom_metadata_map)
    else:
        side = path.with_suffix(".json")
        if not side.is_file():
            raise ParbenchError(side, "the metadata JSON written beside a TorchScript export", "no such file")
        raw = json.loads(side.read_text())
    missing = [k for k in META_KEYS if k not in raw]
    if missing:
        raise ParbenchError(path, "a model exported by parbench (its metadata)", f"none of {missing}")
    return {k.removeprefix("parbench_"): json.loads(raw[k]) for k in META_KEYS}


def export_run(
    checkpoint: str | Path,
    fmt: str,
    output: str | Path,
    dataset: str | None = None,
    method: str | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    overrides: dict | None = None,
) -> dict:
    """Export a run's model (see the module docstring); returns what was written and the parity measured."""
    import numpy as np
    import torch

    from parbench.atomic import atomic_write
    from parbench.engine.restore import restore

    if fmt not in FORMATS:
        raise ParbenchError("--format", f"one of {', '.join(FORMATS)}", repr(fmt))
    output = Path(output)
    if output.is_dir():
        raise ParbenchError(output, "a file path for the exported model (-o model.onnx / model.pt)", "a folder")
    if (output.suffix == ".onnx") != (fmt == "onnx"):  # a file is run by its suffix: .onnx by onnxruntime
        want = "a .onnx file" if fmt == "onnx" else "a file not ending in .onnx (model.pt)"
        raise ParbenchError(output, f"{want} for --format {fmt}", f"'{output.suffix or 'no suffix'}'")
    r = restore(checkpoint, method, dataset, backbone, pretrained, overrides)
    model = r.built.model.to("cpu").eval()
    merged = merge_adapters(model)
    module = _probabilities(model)
    h, w = r.built.preprocess.size
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = module(example).numpy()
    meta = metadata(r)
    name = r.built.method.name
    # nn.MultiheadAttention's inference fast path (a fused kernel ONNX has no operator for) is what a frozen
    # CLIP tower runs in eval mode; the exported graph uses its plain form, the same arithmetic
    fastpath = torch.backends.mha.get_fastpath_enabled()
    other = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager_other = module(other).numpy()
    measured: dict[str, float] = {}

    def write_checked(tmp: str) -> None:
        """Export into the temporary file and check it there: a failed check leaves any file already at the
        output path as it was (atomic_write removes the temporary file and moves nothing)."""
        _export(module, example, tmp, meta, fmt, name)
        # checked on the traced batch and on one of another size (a batch size baked into the graph shows there)
        try:
            run = load_exported(tmp)
            diff = max(float(np.abs(run(x.numpy()) - e).max()) for x, e in ((example, eager), (other, eager_other)))
        except Exception as e:  # the file does not run (a shape fixed at export time)
            raise ParbenchError(
                f"method {name}",
                f"a {fmt} export that runs on any batch size",
                f"{type(e).__name__}: {str(e).splitlines()[0][:200]} (nothing written)",
            ) from None
        if not diff <= TOLERANCE:
            raise ParbenchError(
                f"method {name}",
                f"an export that matches the eager model to {TOLERANCE:g}",
                f"a largest probability difference of {diff:.3g} (nothing written)",
            )
        measured["diff"] = diff

    torch.backends.mha.set_fastpath_enabled(False)
    try:
        atomic_write(output, write_checked)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    if fmt == "torchscript":
        from parbench.atomic import write_text

        write_text(output.with_suffix(".json"), json.dumps(meta, indent=1))
    diff = measured["diff"]
    return {
        "path": str(output),
        "format": fmt,
        "method": name,
        "dataset": r.card.name,
        "size": [h, w],
        "lora_layers_merged": merged,
        "max_abs_diff": diff,
        "metadata": {k: json.loads(v) for k, v in meta.items()},
    }
