"""`parbench run | eval | predict | score`: train and evaluate one run, evaluate a checkpoint, predict image
files, score saved predictions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from parbench.cli.common import (
    JsonOut,
    Partition,
    Root,
    Sets,
    app,
    err,
    out,
    overrides,
    print_json,
    print_metrics,
)
from parbench.errors import ParbenchError


@app.command("run")
def run_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name or card file (.toml); synthetic needs no --root.")],
    method: Annotated[
        str, typer.Option(help="Method name (see `methods list`), or a plugin: package.module:SPEC, path/file.py:SPEC.")
    ],
    root: Root = None,
    backbone: Annotated[
        str | None, typer.Option(help="open_clip model name or timm:NAME (method default if omitted).")
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="open_clip or timm tag, weights file, or 'none' (random, from the seed).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for data order, augmentation and init.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Override the recipe's epochs.")] = None,
    partition: Partition = 0,
    config: Annotated[Path | None, typer.Option(help="TOML file of settings.")] = None,
    set_: Sets = None,
    select_on: Annotated[str | None, typer.Option(help="Selection split: val, carve, last or test (marked).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run folders.")] = Path("runs"),
    store: Annotated[Path | None, typer.Option(help="Results store to record the run in.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last finished epoch.")] = False,
    from_pickle: Annotated[
        Path | None,
        typer.Option(
            help="Read a reference pickle (dataset_all.pkl / pad.pkl) instead of the original annotation files."
        ),
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(help="A split from `datasets zs-split` (identity-disjoint) instead of the dataset's own."),
    ] = None,
    eval_on: Annotated[
        list[str] | None,
        typer.Option(
            "--eval-on",
            help="Also score the selected model on this dataset's test split over the shared attributes "
            "(repeatable; a cross record each).",
        ),
    ] = None,
    eval_root: Annotated[
        list[str] | None, typer.Option(help="NAME=DIR: the root of an --eval-on dataset (repeatable).")
    ] = None,
    as_json: JsonOut = False,
) -> None:
    """Train (if the method trains), select without peeking, evaluate on test, record."""
    from parbench.engine.run import RunSpec, run

    settings = overrides(config, set_)
    if epochs is not None:
        settings["epochs"] = epochs
    if select_on is not None:
        settings["select_on"] = select_on
    spec = RunSpec(
        dataset=dataset,
        method=method,
        backbone=backbone,
        pretrained=pretrained,
        seed=seed,
        root=str(root) if root else None,
        partition=partition,
        overrides=settings,
        out=str(out_dir),
        resume=resume,
        store=str(store) if store else None,
        quiet=as_json,
        source=str(from_pickle) if from_pickle else None,
        split_file=str(split_file) if split_file else None,
        eval_on=list(eval_on or []),
        eval_roots=_named_roots(eval_root or []),
    )
    rec = run(spec)
    if "rank" in rec:  # torchrun: ranks other than 0 print nothing
        return
    if as_json:
        return print_json({k: v for k, v in rec.items() if k != "config"} | {"config": rec["config"]})
    if rec.get("reused"):
        err.print(
            f"finished earlier (same settings and data): {rec['run_dir']}; remove that folder to run it again",
            markup=False,
            highlight=False,
        )
    print_metrics(rec["metrics"])
    out.print(
        f"selected on {rec['selected_on']}; {rec['trainable_params']:,} of {rec['total_params']:,} params train; "
        f"{rec['wall_s']:.1f} s; {rec['run_dir']}",
        highlight=False,
    )
    for c in rec.get("cross", []):
        _print_cross(c)


def _named_roots(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ParbenchError("--eval-root", "NAME=DIR (an --eval-on dataset and its folder)", repr(item))
        out[name] = folder
    return out


def _print_cross(c: dict) -> None:
    m = c["mapping"]
    head = " ".join(f"{p}: mA {100 * v['ma']:.2f} F1 {100 * v['f1']:.2f}" for p, v in c["metrics"].items())
    out.print(
        f"on {c['evaluated_on']}/{c['eval_split']} ({c['n_test']} images, {len(m['pairs'])} shared attributes; "
        f"dropped {len(m['dropped_train'])} of {c['trained_on']}'s, {len(m['dropped_eval'])} of "
        f"{c['evaluated_on']}'s): {head}",
        highlight=False,
    )


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option(help="A run folder / trainable.pt, or a reference checkpoint.")],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset (default: the run's; required for reference files).")
    ] = None,
    method: Annotated[str | None, typer.Option(help="Method (default: the run's; read off a reference file).")] = None,
    root: Root = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="open_clip model name (default: the run's / read off a reference file)."),
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="Backbone weights for a parbench checkpoint (default: the run's).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to evaluate (default: the card's test split).")] = None,
    partition: Annotated[int | None, typer.Option(help="Random partition (default: the run's own, else 0).")] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="A `datasets zs-split` file (default: the run's own, if it had one).")
    ] = None,
    from_pickle: Annotated[
        Path | None, typer.Option(help="A reference pickle as the data source (default: the run's own).")
    ] = None,
    set_: Sets = None,
    predictions: Annotated[Path | None, typer.Option(help="Write probabilities and labels to this .npz.")] = None,
    as_json: JsonOut = False,
) -> None:
    """Evaluate a trained checkpoint (parbench's, or PromptPAR's released/reference files) on a dataset.

    A run is evaluated on its own data (partition, split file, source) unless another is asked for; a
    reference file's options are read off its tensors, and what could not be read is printed with its default."""
    from parbench.engine.restore import evaluate_checkpoint

    res = evaluate_checkpoint(
        checkpoint,
        dataset,
        str(root) if root else None,
        method,
        backbone,
        pretrained,
        overrides(None, set_),
        split,
        partition,
        predictions,
        quiet=as_json,
        split_file=str(split_file) if split_file else None,
        source=str(from_pickle) if from_pickle else None,
    )
    if as_json:
        return print_json(res)
    _print_inferred(res)
    print_metrics(res["metrics"])
    out.print(
        f"{res['method']} ({res['format']} checkpoint) on {res['dataset']}/{res['split']}: {res['n']} images, "
        f"{res['images_per_s']:.1f} img/s on {res['device']}",
        highlight=False,
    )


def _print_inferred(res: dict) -> None:
    """What eval took from where: the run's own data, or a reference file's inferred options."""
    d = res["data"]
    if res["data_from_run"]:
        got = ", ".join(f"{k} {d[k]}" for k in res["data_from_run"])
        err.print(
            f"data: the run's own ({got}); pass --partition / --split-file / --from-pickle / --root to "
            "evaluate elsewhere",
            markup=False,
            highlight=False,
        )
    if d.get("limit"):
        err.print(
            f"data: the run's first {d['limit']} {res['split']} images (a smoke run: limit={d['limit']})",
            markup=False,
            highlight=False,
        )
    inf = res.get("inferred")
    if not inf:
        return
    say = lambda text: err.print(text, markup=False, highlight=False)
    say("read off the checkpoint's tensors: " + ", ".join(f"{k}={v}" for k, v in inf["read_off_tensors"].items()))
    say(f"backbone: {inf['backbone']} ({inf['activation']}: the reference's CLIP is OpenAI's code)")
    say(
        "not in the tensors, taken as defaults (--set key=value to change): "
        + ", ".join(f"{k}={v}" for k, v in inf["defaults"].items())
    )
    if inf["overrides"]:
        say("set by you: " + ", ".join(f"{k}={v}" for k, v in inf["overrides"].items()))
    p = inf["preprocess"]
    norm = "mean=std=0.5" if tuple(p["mean"]) == (0.5, 0.5, 0.5) else f"mean {tuple(p['mean'])}"
    say(
        f"preprocessing: resize to {p['size'][0]}x{p['size'][1]} {p['interpolation']}, {norm}, letterbox "
        + (
            "on"
            if p["letterbox"]
            else "off (the reference expects pre-padded Pad_datasets images; "
            "--set letterbox=true pads raw images on the fly)"
        )
    )


@app.command("predict")
def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    run_dir: Annotated[Path | None, typer.Option("--run", help="A run folder (its trainable.pt).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A checkpoint file (parbench or PromptPAR reference).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="A model written by `parbench export` (.onnx or TorchScript).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset whose attributes a reference checkpoint has.")] = None,
    backbone: Annotated[str | None, typer.Option(help="open_clip model name (default: the run's).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="Backbone weights (default: the run's).")] = None,
    protocol: Annotated[
        str, typer.Option(help="Decision threshold of promptpar (0.45) or rethinking (0.5).")
    ] = "promptpar",
    threshold: Annotated[float | None, typer.Option(help="Override the decision threshold.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    set_: Sets = None,
) -> None:
    """Per image: every attribute's probability and decision, with the run's preprocessing."""
    from parbench.atomic import write_text
    from parbench.predict import format_predictions, predict_exported, predict_images
    from parbench.progress import progress_bar

    given = [x for x in (run_dir, checkpoint, model) if x is not None]
    if len(given) != 1:
        raise ParbenchError(
            "predict",
            "exactly one of --run RUN, --checkpoint FILE or --model FILE",
            "neither" if not given else f"{len(given)} of them",
        )
    progress = progress_bar(False)
    with progress:
        res = (
            predict_exported(model, images, protocol, threshold, progress=progress)
            if model
            else predict_images(
                run_dir or checkpoint,
                images,
                protocol,
                threshold,
                dataset,
                None,
                backbone,
                pretrained,
                overrides(None, set_),
                progress=progress,
            )
        )
    text = format_predictions(res, fmt)
    if output:
        write_text(output, text)
        err.print(f"{len(res['images'])} images -> {output}")
    else:
        sys.stdout.write(text)


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder / trainable.pt, or a reference checkpoint.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (model.onnx, model.pt).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    dataset: Annotated[str | None, typer.Option(help="Dataset (required for a reference checkpoint).")] = None,
    method: Annotated[str | None, typer.Option(help="Method (default: the run's).")] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone (default: the run's).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="Backbone weights (default: the run's).")] = None,
    set_: Sets = None,
    as_json: JsonOut = False,
) -> None:
    """Write a self-contained inference model: normalised images (N x 3 x H x W) in, probabilities out, with the
    attributes, thresholds, preprocessing and run identity in its metadata; checked against the eager model."""
    from parbench.export import export_run

    res = export_run(checkpoint, fmt, output, dataset, method, backbone, pretrained, overrides(None, set_))
    if as_json:
        return print_json(res)
    h, w = res["size"]
    out.print(
        f"{res['method']} on {res['dataset']} -> {res['path']} ({res['format']}, input N x 3 x {h} x {w}; "
        f"largest difference to the eager model {res['max_abs_diff']:.1e})",
        highlight=False,
    )


@app.command("score")
def score(
    labels: Annotated[Path, typer.Option(help="N x K labels (.npy): 0, 1, 255 = unspecified.")],
    probs: Annotated[Path, typer.Option(help="N x K probabilities (.npy).")],
    protocol: Annotated[
        str, typer.Option(help="promptpar (0.45, mean F1) or rethinking (0.5, harmonic F1).")
    ] = "promptpar",
    threshold: Annotated[float | None, typer.Option(help="Override the protocol's threshold.")] = None,
    unspecified: Annotated[str, typer.Option(help="Label 255: negative (default), ignore, or stored.")] = "negative",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for 95% intervals (0 = off).")] = 0,
    as_json: JsonOut = False,
) -> None:
    """Score saved predictions of any model."""
    from parbench.arrays import load_npy
    from parbench.metrics import bootstrap_ci, check_predictions, pedestrian_metrics

    arrays = [load_npy(labels), load_npy(probs)]
    check_predictions(*arrays, unspecified, names=(str(labels), str(probs)))
    if bootstrap < 0:
        raise ParbenchError("--bootstrap", "a number of resamples >= 0", str(bootstrap))
    m = pedestrian_metrics(arrays[0], arrays[1], protocol, threshold, unspecified)
    res = m.to_dict()
    if bootstrap:
        res["ci95"] = bootstrap_ci(arrays[0], arrays[1], protocol, threshold, unspecified, n_boot=bootstrap)
    if as_json:
        return print_json(res)
    out.print(
        "  ".join(f"{k} {100 * res[k]:.2f}" for k in ("ma", "acc", "prec", "rec", "f1"))
        + f"  ({m.protocol}, threshold {m.threshold})"
    )
