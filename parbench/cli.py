"""The `parbench` command line: parse, call the library, print. Progress and messages go to stderr so that
`--json` leaves stdout machine-clean. User errors are one red line and exit code 1 (traceback with --debug).
Heavy imports (torch, open_clip) happen inside the commands that need them.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from parbench import __version__
from parbench.errors import ParbenchError

app = typer.Typer(add_completion=False, rich_markup_mode="rich", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Benchmark and zero-shot evaluation suite for pedestrian attribute recognition.")  # fmt: skip
datasets_app = typer.Typer(no_args_is_help=True, help="Dataset cards: list, inspect, prepare, audit.")
methods_app = typer.Typer(no_args_is_help=True, help="Registered methods and their parameter counts.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs in a results store: list, export.")
store_app = typer.Typer(no_args_is_help=True, help="Results-store maintenance.")
app.add_typer(datasets_app, name="datasets")
app.add_typer(methods_app, name="methods")
app.add_typer(runs_app, name="runs")
app.add_typer(store_app, name="store")

err = Console(stderr=True, soft_wrap=True)  # long paths stay on one line, pasteable
out = Console(soft_wrap=True)
STATE = {"debug": False}
DEFAULT_STORE = "runs/store.sqlite"


def _version(value: bool) -> None:
    if value:
        print(f"parbench {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    STATE["debug"] = debug


def _json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=float) + "\n")


# ---------------------------------------------------------------------------------------------- datasets
@datasets_app.command("list")
def datasets_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the registered datasets (one card each)."""
    from parbench.cards import list_cards, load_card

    cards = [load_card(n) for n in list_cards()]
    if as_json:
        return _json(
            [
                {"name": c.name, "attributes": c.num_attributes, "splits": c.splits, "reader": c.reader}
                for c in cards
            ]
        )
    t = Table("dataset", "attributes", "splits (card)", "reader", "description")
    for c in cards:
        t.add_row(
            c.name,
            str(c.num_attributes),
            " ".join(f"{k}={v}" for k, v in c.splits.items() if v),
            c.reader,
            c.description,
        )
    out.print(t)


@datasets_app.command("info")
def datasets_info(
    name: Annotated[str, typer.Argument(help="Dataset name (see `datasets list`).")],
    root: Annotated[
        Path | None, typer.Option(help="Dataset folder; reads the files for sizes and ratios.")
    ] = None,
    partition: Annotated[int, typer.Option(help="Random partition (0-4 where the dataset has 5).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Card facts; with data available, split sizes and per-attribute positive ratios."""
    from parbench.cards import load_card
    from parbench.settings import configured_root

    card = load_card(name)
    info = {"name": card.name, "version": card.version, "reader": card.reader, "source_files": list(card.source_files),
            "splits_card": card.splits, "attributes": [a.name for a in card.attributes],
            "groups": card.groups()}  # fmt: skip
    if root is not None or configured_root(card.name) is not None or card.reader == "synthetic_json":
        from parbench.data import load_dataset

        ds = load_dataset(card.name, root, partition)
        info["splits"] = {s: int(ds.partition(s).size) for s in ds.splits}
        train = card.train_split if card.train_split in ds.partitions else ds.splits[0]
        info["positive_ratio"] = dict(
            zip(ds.attributes, ds.positive_ratio(train).round(4).tolist(), strict=True)
        )
        info["ratio_split"] = train
    if as_json:
        return _json(info)
    out.print(f"[bold]{card.name}[/] v{card.version} — {card.description}")
    out.print(f"reader {card.reader}; files {', '.join(card.source_files)}")
    if "splits" in info:
        out.print("splits: " + ", ".join(f"{k}={v}" for k, v in info["splits"].items()))
    t = Table("#", "attribute", "group", f"positive ratio ({info.get('ratio_split', '-')})", "sentence")
    for i, a in enumerate(card.attributes):
        ratio = info.get("positive_ratio", {}).get(a.name)
        t.add_row(str(i), a.name, a.group, "–" if ratio is None else f"{ratio:.3f}", a.positive)
    out.print(t)


@datasets_app.command("prepare")
def datasets_prepare(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    root: Annotated[
        Path | None, typer.Option(help="Folder holding the original files (or set it in the config).")
    ] = None,
    partition: Annotated[int, typer.Option(help="Random partition (0-4).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Read the originals once, check images and split sizes, write the fast prepared copy."""
    from parbench.data import prepare_dataset

    with err.status(f"preparing {name}") as status:
        rep = prepare_dataset(
            name, root, partition, progress=lambda i, n: status.update(f"checking images {i}/{n}")
        )
    if as_json:
        return _json(rep)
    out.print(f"{rep['dataset']}: {rep['images']} samples, splits {rep['splits']}")
    if rep["missing"]:
        err.print(f"[yellow]{rep['missing']} image files missing, e.g. {rep['missing_examples'][:3]}[/]")
    for s, m in rep["split_mismatches"].items():
        err.print(f"[yellow]split {s}: card says {m['card']}, found {m['found']} (a subset?)[/]")
    out.print(f"prepared: {rep['prepared']}")


@datasets_app.command("audit")
def datasets_audit(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    partition: Annotated[int, typer.Option(help="Random partition.")] = 0,
    hashes: Annotated[
        bool, typer.Option(help="Also hash every image to find exact duplicates across splits.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Identity overlap between train and test, and exact-duplicate images across splits."""
    from parbench.data import load_dataset
    from parbench.data.audit import audit

    ds = load_dataset(name, root, partition)
    with err.status("hashing images") as status:
        rep = audit(ds, hashes, progress=lambda i, n: status.update(f"hashing images {i}/{n}"))
    if as_json:
        return _json(rep)
    for k, v in rep.items():
        out.print(f"{k}: {v}")


@datasets_app.command("zs-split")
def datasets_zs_split(
    name: Annotated[str, typer.Argument(help="A dataset with person identities (e.g. RAPv2, synthetic).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file for the split.")],
    root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the identity permutation.")] = 0,
    fractions: Annotated[str, typer.Option(help="train,val,test shares of the identities.")] = "0.6,0.2,0.2",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (only).")] = False,
) -> None:
    """A seeded identity-disjoint train/val/test split: no person appears in two splits."""
    from parbench.data import load_dataset
    from parbench.data.audit import write_identity_split

    try:
        fr = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        raise ParbenchError("--fractions", "three numbers, e.g. 0.6,0.2,0.2", fractions) from None
    summary = write_identity_split(load_dataset(name, root), output, seed, fr)
    if as_json:
        return _json(summary)
    out.print(f"{summary['dataset']}: identity-disjoint split (seed {seed}) -> {output}")
    for k, v in summary["splits"].items():
        out.print(f"  {k}: {v['images']} images, {v['identities']} identities")


# ---------------------------------------------------------------------------------------------- methods
@methods_app.command("list")
def methods_list(
    filter: Annotated[str | None, typer.Option(help="fnmatch pattern, e.g. 'prompt*'.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered methods."""
    from parbench.methods import get_method, list_methods

    names = list_methods(filter)
    if as_json:
        return _json(names)
    for n in names:
        out.print(f"[bold]{n}[/]  {get_method(n).description}")


@methods_app.command("info")
def methods_info(
    method: Annotated[str, typer.Argument(help="Method name.")],
    backbone: Annotated[
        str, typer.Option(help="open_clip model name, e.g. ViT-L-14 or parbench-tiny.")
    ] = "ViT-L-14",
    dataset: Annotated[str | None, typer.Option(help="Dataset whose attributes size the heads.")] = None,
    num_attributes: Annotated[
        int | None, typer.Option(help="Number of attributes, instead of --dataset.")
    ] = None,
    variant: Annotated[str | None, typer.Option(help="PromptPAR variant: fixed or reference.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Method option key=value (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Total and trainable parameter counts, counted on torch's meta device (no memory, seconds)."""
    from parbench.info import method_info

    overrides = dict(kv.split("=", 1) for kv in set_ or [])
    if variant:
        overrides["variant"] = variant
    info = method_info(method, backbone, dataset, num_attributes, overrides)
    if as_json:
        return _json(info)
    out.print(f"{info['method']} on {info['backbone']} ({info['num_attributes']} attributes, {info['activation']}): "
              f"{info['total_params']:,} total, {info['trainable_params']:,} trainable ({info['trainable_pct']:.3f}%); "
              f"image tower {info['image_tower_params']:,}; {info['flops_per_image'] / 1e9:,.1f} GFLOPs per image",
              highlight=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------- run / eval
def _overrides(config: Path | None, sets: list[str] | None) -> dict:
    from parbench.engine.config import load_config_file, parse_sets

    o = {}
    if config:
        doc = load_config_file(config)
        o.update({k: v for k, v in doc.items() if not isinstance(v, dict)})
        for table in doc.values():
            if isinstance(table, dict):
                o.update(table)
    o.update(parse_sets(sets))
    return o


def _print_metrics(metrics: dict) -> None:
    for proto, mm in metrics.items():
        out.print(f"{proto:10s} mA {100 * mm['ma']:.2f}  Acc {100 * mm['acc']:.2f}  Prec {100 * mm['prec']:.2f}  "
                  f"Rec {100 * mm['rec']:.2f}  F1 {100 * mm['f1']:.2f}")  # fmt: skip


@app.command("run")
def run_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name (synthetic needs no --root).")],
    method: Annotated[str, typer.Option(help="Method name (see `methods list`).")],
    root: Annotated[Path | None, typer.Option(help="Dataset folder (or set it once in the config).")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="open_clip model name (method default if omitted).")
    ] = None,
    pretrained: Annotated[str | None, typer.Option(help="open_clip tag, checkpoint file, or 'none'.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data order, augmentation and init.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Override the recipe's epochs.")] = None,
    partition: Annotated[int, typer.Option(help="Random partition (0-4).")] = 0,
    config: Annotated[Path | None, typer.Option(help="TOML file of settings.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Setting key=value (repeatable).")] = None,
    select_on: Annotated[
        str | None, typer.Option(help="Selection split: val, carve, last or test (marked).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run folders.")] = Path("runs"),
    store: Annotated[Path | None, typer.Option(help="Results store to record the run in.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last finished epoch.")] = False,
    from_pickle: Annotated[
        Path | None,
        typer.Option(
            help="Read a reference pickle (dataset_all.pkl / pad.pkl) "
            "instead of the original annotation files."
        ),
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(
            help="A split from `datasets zs-split` (identity-disjoint) instead of the dataset's own."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record as JSON (only).")] = False,
) -> None:
    """Train (if the method trains), select without peeking, evaluate on test, record."""
    from parbench.engine.run import RunSpec, run

    overrides = _overrides(config, set_)
    if epochs is not None:
        overrides["epochs"] = epochs
    if select_on is not None:
        overrides["select_on"] = select_on
    spec = RunSpec(dataset=dataset, method=method, backbone=backbone, pretrained=pretrained, seed=seed,
                   root=str(root) if root else None, partition=partition, overrides=overrides, out=str(out_dir),
                   resume=resume, store=str(store) if store else None, quiet=as_json,
                   source=str(from_pickle) if from_pickle else None,
                   split_file=str(split_file) if split_file else None)  # fmt: skip
    rec = run(spec)
    if "rank" in rec:  # torchrun: ranks other than 0 print nothing
        return
    if as_json:
        return _json({k: v for k, v in rec.items() if k != "config"} | {"config": rec["config"]})
    if rec.get("reused"):
        err.print(f"finished earlier (same settings and data): {rec['run_dir']}; remove that folder to run it "
                  "again", markup=False, highlight=False)  # fmt: skip
    _print_metrics(rec["metrics"])
    out.print(f"selected on {rec['selected_on']}; {rec['trainable_params']:,} of {rec['total_params']:,} params train; "
              f"{rec['wall_s']:.1f} s; {rec['run_dir']}", highlight=False)  # fmt: skip


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option(help="A run folder / trainable.pt, or a reference checkpoint.")],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset (default: the run's; required for reference files).")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Method (default: the run's; read off a reference file).")
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the run's, or the config).")
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="open_clip model name (default: the run's / read off a reference file)."),
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="Backbone weights for a parbench checkpoint (default: the run's).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to evaluate (default: the card's test split).")
    ] = None,
    partition: Annotated[
        int | None, typer.Option(help="Random partition (default: the run's own, else 0).")
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="A `datasets zs-split` file (default: the run's own, if it had one).")
    ] = None,
    from_pickle: Annotated[
        Path | None, typer.Option(help="A reference pickle as the data source (default: the run's own).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Setting key=value (repeatable).")] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Write probabilities and labels to this .npz.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON object.")] = False,
) -> None:
    """Evaluate a trained checkpoint (parbench's, or PromptPAR's released/reference files) on a dataset.

    A run is evaluated on its own data (partition, split file, source) unless another is asked for; a
    reference file's options are read off its tensors, and what could not be read is printed with its default."""
    from parbench.engine.restore import evaluate_checkpoint

    res = evaluate_checkpoint(checkpoint, dataset, str(root) if root else None, method, backbone, pretrained,
                              _overrides(None, set_), split, partition, predictions, quiet=as_json,
                              split_file=str(split_file) if split_file else None,
                              source=str(from_pickle) if from_pickle else None)  # fmt: skip
    if as_json:
        return _json(res)
    _print_inferred(res)
    _print_metrics(res["metrics"])
    out.print(f"{res['method']} ({res['format']} checkpoint) on {res['dataset']}/{res['split']}: {res['n']} images, "
              f"{res['images_per_s']:.1f} img/s on {res['device']}", highlight=False)  # fmt: skip


def _print_inferred(res: dict) -> None:
    """What eval took from where: the run's own data, or a reference file's inferred options."""
    d = res["data"]
    if res["data_from_run"]:
        got = ", ".join(f"{k} {d[k]}" for k in res["data_from_run"])
        err.print(f"data: the run's own ({got}); pass --partition / --split-file / --from-pickle / --root to "
                  "evaluate elsewhere", markup=False, highlight=False)  # fmt: skip
    if d.get("limit"):
        err.print(f"data: the run's first {d['limit']} {res['split']} images (a smoke run: limit={d['limit']})",
                  markup=False, highlight=False)  # fmt: skip
    inf = res.get("inferred")
    if not inf:
        return
    say = lambda text: err.print(text, markup=False, highlight=False)
    say(
        "read off the checkpoint's tensors: "
        + ", ".join(f"{k}={v}" for k, v in inf["read_off_tensors"].items())
    )
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
    dataset: Annotated[
        str | None, typer.Option(help="Dataset whose attributes a reference checkpoint has.")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="open_clip model name (default: the run's).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="Backbone weights (default: the run's).")] = None,
    protocol: Annotated[
        str, typer.Option(help="Decision threshold of promptpar (0.45) or rethinking (0.5).")
    ] = "promptpar",
    threshold: Annotated[float | None, typer.Option(help="Override the decision threshold.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Setting key=value (repeatable).")] = None,
) -> None:
    """Per image: every attribute's probability and decision, with the run's preprocessing."""
    from parbench.atomic import write_text
    from parbench.predict import format_predictions, predict_images
    from parbench.progress import progress_bar

    if (run_dir is None) == (checkpoint is None):
        raise ParbenchError(
            "predict", "exactly one of --run RUN or --checkpoint FILE", "both" if run_dir else "neither"
        )
    progress = progress_bar(False)
    with progress:
        res = predict_images(run_dir or checkpoint, images, protocol, threshold, dataset, None, backbone, pretrained,
                             _overrides(None, set_), progress=progress)  # fmt: skip
    text = format_predictions(res, fmt)
    if output:
        write_text(output, text)
        err.print(f"{len(res['images'])} images -> {output}")
    else:
        sys.stdout.write(text)


@app.command("score")
def score(
    labels: Annotated[Path, typer.Option(help="N x K labels (.npy): 0, 1, 255 = unspecified.")],
    probs: Annotated[Path, typer.Option(help="N x K probabilities (.npy).")],
    protocol: Annotated[
        str, typer.Option(help="promptpar (0.45, mean F1) or rethinking (0.5, harmonic F1).")
    ] = "promptpar",
    threshold: Annotated[float | None, typer.Option(help="Override the protocol's threshold.")] = None,
    unspecified: Annotated[
        str, typer.Option(help="Label 255: negative (default), ignore, or stored.")
    ] = "negative",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for 95% intervals (0 = off).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON object.")] = False,
) -> None:
    """Score saved predictions of any model."""
    import numpy as np

    from parbench.metrics import bootstrap_ci, pedestrian_metrics

    arrays = []
    for p in (labels, probs):
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ParbenchError(p, "a .npy array", str(e)) from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise ParbenchError(
                p, "a .npy array (one array per file)", f"an .npz archive of {list(arr.files)}"
            )
        arrays.append(arr)
    if bootstrap < 0:
        raise ParbenchError("--bootstrap", "a number of resamples >= 0", str(bootstrap))
    m = pedestrian_metrics(arrays[0], arrays[1], protocol, threshold, unspecified)
    res = m.to_dict()
    if bootstrap:
        res["ci95"] = bootstrap_ci(arrays[0], arrays[1], protocol, threshold, unspecified, n_boot=bootstrap)
    if as_json:
        return _json(res)
    out.print("  ".join(f"{k} {100 * res[k]:.2f}" for k in ("ma", "acc", "prec", "rec", "f1")) +
              f"  ({m.protocol}, threshold {m.threshold})")  # fmt: skip


# ---------------------------------------------------------------------------------------------- suites, report
@app.command("suite")
def suite_cmd(
    file: Annotated[Path, typer.Argument(help="Suite TOML file.")],
    store: Annotated[
        Path | None, typer.Option(help="The suite's results store (default: the suite's).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="The suite's folder (default: the suite's).")
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(
            help="local (here, one run after another), local-parallel (--jobs processes here), "
            "or slurm (one job per shard, through submitit)."
        ),
    ] = "local",
    jobs: Annotated[
        int,
        typer.Option(help="Processes (local-parallel) or Slurm jobs: the suite is cut in this many shards."),
    ] = 1,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run only share k of n (e.g. 2/4), or 'auto' from SLURM_ARRAY_TASK_ID/"
            "SLURM_PROCID/RANK and their counts (a hand-written sbatch script)."
        ),
    ] = None,
    job_store: Annotated[
        bool,
        typer.Option(help="With --shard: record runs in the shard's own store under the suite's folder."),
    ] = False,
    collect: Annotated[
        bool, typer.Option(help="Merge the jobs' stores into the suite's store and list what is missing.")
    ] = False,
    partition: Annotated[
        str | None, typer.Option(help="Slurm partition (else the suite's [slurm] table).")
    ] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    time_min: Annotated[int | None, typer.Option("--time", help="Slurm time limit per job, minutes.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs per Slurm job.")] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs per Slurm job.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the plan (runs, shards, jobs), run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan / result as JSON (only).")] = False,
) -> None:
    """Run a grid of runs here, in parallel processes, or on a Slurm cluster. Finished runs are skipped and an
    interrupted one resumes, so the same command continues a suite (and re-submits jobs that died)."""
    from parbench import launch
    from parbench.suite import load_suite, run_suite
    from parbench.suite import shard as take_shard

    suite = load_suite(file, store=str(store) if store else None, out=str(out_dir) if out_dir else None)
    if collect:
        res = launch.collect(suite)
        if as_json:
            return _json(res)
        out.print(f"merged {res['merged']} job records into {res['store']}: {res['runs']} runs, {res['missing']} missing",
                  highlight=False)  # fmt: skip
        for j in res["jobs"]:
            if j["missing"]:
                err.print(f"job {j['job_id']} (shard {j['shard']}): {j['missing']} runs missing; log {j['stderr']}",
                          markup=False, highlight=False)  # fmt: skip
        return
    k_n = launch.parse_shard(shard)
    if k_n is not None:  # one share, here (what a job or a hand-written sbatch script runs)
        k, n = k_n
        if job_store:
            suite.job_store = str(launch.shard_store(suite, k, n))
        from parbench.suite import pending

        specs = take_shard(suite.specs, k, n)
        todo = pending(suite, specs)
        err.print(f"suite {suite.name}, shard {k}/{n}: {len(specs)} runs, {len(specs) - len(todo)} already done, "
                  f"{len(todo)} to run", highlight=False)  # fmt: skip
        if dry_run:
            for s in todo:
                out.print(f"{s.dataset} {s.method} {s.backbone} seed={s.seed} key={s.key()}", highlight=False)
            return
        run_suite(suite, specs, on_done=launch._announce(err.print))
        return
    slurm = {
        "partition": partition,
        "account": account,
        "time": time_min,
        "gpus_per_node": gpus,
        "cpus_per_task": cpus,
    }
    plan = launch.launch(
        suite, launcher, jobs, slurm, dry_run, log=lambda m: err.print(m, markup=False, highlight=False)
    )
    if as_json:
        return _json(plan)
    err.print(f"suite {plan['suite']}: {plan['runs']} runs, {plan['done']} already done, {plan['pending']} to run"
              + ("" if launcher == "local" else f" in {len(plan['jobs'])} {launcher} job(s)"), highlight=False)  # fmt: skip
    if dry_run:  # the plan: each job with its share, and (one local process) every pending run
        from parbench.suite import pending

        if launcher != "local":
            for j in plan["jobs"]:
                out.print(f"job {j['shard']}: {j['runs']} runs", highlight=False)
        for s in pending(suite, suite.specs):
            out.print(f"{s.dataset} {s.method} {s.backbone} seed={s.seed} key={s.key()}", highlight=False)
    for j in plan.get("submitted", []):
        out.print(
            f"job {j['job_id']}: shard {j['shard']}, store {j['store']}, log {j['stderr']}", highlight=False
        )
    if plan.get("collected"):
        c = plan["collected"]
        out.print(f"collected into {c['store']}: {c['runs']} runs, {c['missing']} missing", highlight=False)


@app.command("report")
def report_cmd(
    store: Annotated[Path, typer.Option(help="Results store.")] = Path(DEFAULT_STORE),
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("reports/latest"),
    protocol: Annotated[
        str, typer.Option(help="Protocol shown first: promptpar or rethinking (both are in the page).")
    ] = "promptpar",
    include_smoke: Annotated[
        bool, typer.Option(help="Include smoke runs (runs with --set limit=N or --set max_steps=N).")
    ] = False,
) -> None:
    """Render the HTML report (both protocols), the leaderboard (Markdown, CSV) and the main table (Markdown,
    LaTeX) from a store."""
    from parbench.report.render import render_report

    path = render_report(store, out_dir, protocol, include_smoke)
    out.print(f"report: {path}", highlight=False)


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports/demo"),
    fresh: Annotated[bool, typer.Option(help="Forget earlier demo runs and run everything again.")] = False,
) -> None:
    """Synthetic data, tiny backbone, every method, two seeds, report — offline, on CPU."""
    from parbench.demo import run_demo

    path = run_demo(out_dir, fresh=fresh, log=err.print)
    out.print(f"demo report: {path}")


# ---------------------------------------------------------------------------------------------- store
@runs_app.command("list")
def runs_list(
    store: Annotated[Path, typer.Option(help="Results store.")] = Path(DEFAULT_STORE),
    protocol: Annotated[str, typer.Option(help="Protocol to show.")] = "promptpar",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One line per finished run (tab-separated when piped, so nothing is cut)."""
    from parbench.store import Store

    rows = [r for r in Store(store, create=False).table() if r["protocol"] == protocol]
    if as_json:
        return _json(rows)
    cols = ("dataset", "method", "backbone", "seed", "mA", "F1", "trainable", "selected on", "run")
    cells = [[r["dataset"], r["method"], r["backbone"], str(r["seed"]), f"{100 * r['ma']:.2f}", f"{100 * r['f1']:.2f}",
              f"{r['trainable_params']:,}", r["selected_on"], r["run_id"]] for r in rows]  # fmt: skip
    if not out.is_terminal:
        sys.stdout.write("\t".join(cols) + "\n" + "".join("\t".join(c) + "\n" for c in cells))
        return
    t = Table(*cols)
    for c in cells:
        t.add_row(*c)
    out.print(t)


@runs_app.command("export")
def runs_export(
    store: Annotated[Path, typer.Option(help="Results store.")] = Path(DEFAULT_STORE),
    output: Annotated[Path, typer.Option("--output", "-o", help="Output CSV file.")] = Path("runs.csv"),
    per_attribute: Annotated[
        bool, typer.Option(help="One row per (run, protocol, attribute) with its mA, instead of one per run.")
    ] = False,
) -> None:
    """Export every finished (run, protocol) row as CSV for analysis elsewhere (pandas, R, a spreadsheet)."""
    import pandas as pd

    from parbench.atomic import write_text
    from parbench.store import Store

    s = Store(store, create=False)
    df = pd.DataFrame(s.attribute_table() if per_attribute else s.table())
    write_text(output, df.to_csv(index=False))
    out.print(f"{len(df)} rows -> {output}", highlight=False)


@store_app.command("merge")
def store_merge(
    target: Annotated[Path, typer.Argument(help="Store to merge into.")],
    sources: Annotated[list[Path], typer.Argument(help="Stores to copy runs from.")],
) -> None:
    """Join stores written by separate shards."""
    from parbench.store import Store

    dst = Store(target)
    n = sum(dst.merge_from(s) for s in sources)
    out.print(f"merged {n} runs into {target}")


class _Terminated(BaseException):
    """SIGTERM (a scheduler's stop, `kill`): unwinds like Ctrl-C so atomic writes finish or leave nothing."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _interrupted(code: int) -> None:
    """One line saying what survives: a run's last finished epoch, resumable with the same command."""
    args = sys.argv[1:]
    cmd = "parbench " + " ".join(shlex.quote(a) for a in args)
    if "run" in args and "--resume" not in args:
        hint = f"resume with: {cmd} --resume"
    elif "run" in args:
        hint = f"resume with: {cmd}"
    elif {"suite", "demo"} & set(args):
        hint = f"continue with: {cmd} (finished runs are skipped, an interrupted one resumes)"
    else:
        hint = "nothing was left half-written"
    err.print(f"interrupted; {hint}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # not standalone: typer then *returns* exit codes, 130 among them for a Ctrl-C it caught itself
        code = app(standalone_mode=False)
        if code == 130:
            _interrupted(130)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ParbenchError as e:
        if STATE["debug"]:
            raise
        # one line, as it is: no markup parsing of paths like [roots], no wrapping of long paths
        err.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted(130)
    except _Terminated:
        _interrupted(143)
    except Exception as e:  # usage errors (typer vendors its own click, so match by behaviour, not class)
        if type(e).__name__ == "Abort":  # click turns Ctrl-C into Abort
            _interrupted(130)
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
