"""`parbench datasets ...`: list, inspect, prepare, audit dataset cards; identity-disjoint splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from parbench.cli.common import JsonOut, Partition, Root, Sets, datasets_app, err, out, overrides, print_json
from parbench.errors import ParbenchError


@datasets_app.command("list")
def datasets_list(
    as_json: JsonOut = False,
) -> None:
    """List the registered datasets (one card each)."""
    from parbench.cards import list_cards, load_card

    cards = [load_card(n) for n in list_cards()]
    if as_json:
        return print_json(
            [{"name": c.name, "attributes": c.num_attributes, "splits": c.splits, "reader": c.reader} for c in cards]
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
    root: Root = None,
    partition: Partition = 0,
    as_json: JsonOut = False,
) -> None:
    """Card facts; with data available, split sizes and per-attribute positive ratios."""
    from parbench.cards import load_card
    from parbench.settings import configured_root

    card = load_card(name)
    info = {
        "name": card.name,
        "version": card.version,
        "reader": card.reader,
        "source_files": list(card.source_files),
        "splits_card": card.splits,
        "attributes": [a.name for a in card.attributes],
        "groups": card.groups(),
        "aliases": {a.name: list(a.aliases) for a in card.attributes if a.aliases},
        "aliases_source": card.aliases_source,
    }
    has_root = root is not None or configured_root(card.name) is not None or (card.root and card.path)
    if has_root or card.reader == "synthetic_json":  # a card kept beside its data names its folder (`root`)
        from parbench.data import load_dataset

        ds = load_dataset(card.path or card.name, root, partition)
        info["splits"] = {s: int(ds.partition(s).size) for s in ds.splits}
        train = card.train_split if card.train_split in ds.partitions else ds.splits[0]
        info["positive_ratio"] = dict(zip(ds.attributes, ds.positive_ratio(train).round(4).tolist(), strict=True))
        info["ratio_split"] = train
    if as_json:
        return print_json(info)
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
    name: Annotated[str, typer.Argument(help="Dataset name, or a card file (.toml).")],
    root: Root = None,
    partition: Partition = 0,
    images: Annotated[
        bool,
        typer.Option(
            "--images",
            help="Also decode, crop and resize every image once into the decoded-image cache, at the size the "
            "run of --method / --backbone feeds its model.",
        ),
    ] = False,
    method: Annotated[str, typer.Option(help="With --images: the method whose input size is cached.")] = "finetune",
    backbone: Annotated[
        str | None, typer.Option(help="With --images: the backbone (method default if omitted).")
    ] = None,
    set_: Sets = None,
    as_json: JsonOut = False,
) -> None:
    """Read the originals once, check images and split sizes, write the fast prepared copy."""
    from parbench.data import prepare_dataset

    with err.status(f"preparing {name}") as status:
        rep = prepare_dataset(name, root, partition, progress=lambda i, n: status.update(f"checking images {i}/{n}"))
    if images:
        from parbench.engine.image_prep import prepare_images
        from parbench.engine.spec import RunSpec
        from parbench.progress import progress_bar

        spec = RunSpec(
            dataset=name,
            method=method,
            backbone=backbone,
            root=str(root) if root else None,
            partition=partition,
            overrides=overrides(None, set_),
        )
        bar = progress_bar(as_json)
        if bar:
            with bar:
                rep["image_cache"] = prepare_images(spec, progress=bar)
        else:
            rep["image_cache"] = prepare_images(spec)
    if as_json:
        return print_json(rep)
    out.print(f"{rep['dataset']}: {rep['images']} samples, splits {rep['splits']}")
    if rep["missing"]:
        err.print(f"[yellow]{rep['missing']} image files missing, e.g. {rep['missing_examples'][:3]}[/]")
    for s, m in rep["split_mismatches"].items():
        err.print(f"[yellow]split {s}: card says {m['card']}, found {m['found']} (a subset?)[/]")
    if rep["domains"]:
        out.print(f"domains: {', '.join(rep['domains'])}", markup=False, highlight=False)
    for note in rep["notes"]:
        err.print(f"note: {note}", markup=False, highlight=False)
    out.print(f"prepared: {rep['prepared']}")
    for c in rep.get("image_cache", []):
        rate = f", {c['images_per_s']:.0f} images/s on {c['workers']} workers" if c.get("images_per_s") else ""
        what = f"{c['decoded_now']} decoded now, {c['decoded_before']} before{rate}" if "decoded_now" in c else ""
        out.print(
            f"image cache {c['split']}: {c['images']} images {what} -> {c['cache']}", markup=False, highlight=False
        )


@datasets_app.command("audit")
def datasets_audit(
    name: Annotated[str, typer.Argument(help="Dataset name, or a card file (.toml).")],
    root: Root = None,
    partition: Partition = 0,
    hashes: Annotated[bool, typer.Option(help="Also hash every image to find exact duplicates across splits.")] = True,
    as_json: JsonOut = False,
) -> None:
    """Identity overlap between train and test, and exact-duplicate images across splits."""
    from parbench.data import load_dataset
    from parbench.data.audit import audit

    ds = load_dataset(name, root, partition)
    with err.status("hashing images") as status:
        rep = audit(ds, hashes, progress=lambda i, n: status.update(f"hashing images {i}/{n}"))
    if as_json:
        return print_json(rep)
    for k, v in rep.items():
        out.print(f"{k}: {v}")


@datasets_app.command("zs-split")
def datasets_zs_split(
    name: Annotated[str, typer.Argument(help="A dataset with person identities (e.g. RAPv2, synthetic).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file for the split.")],
    root: Root = None,
    seed: Annotated[int, typer.Option(help="Seed of the identity permutation.")] = 0,
    fractions: Annotated[str, typer.Option(help="train,val,test shares of the identities.")] = "0.6,0.2,0.2",
    as_json: JsonOut = False,
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
        return print_json(summary)
    out.print(f"{summary['dataset']}: identity-disjoint split (seed {seed}) -> {output}")
    for k, v in summary["splits"].items():
        out.print(f"  {k}: {v['images']} images, {v['identities']} identities")


@datasets_app.command("new")
def datasets_new(
    name: Annotated[str, typer.Argument(help="The dataset's name (as --dataset will call it).")],
    from_table: Annotated[
        Path,
        typer.Option("--from", help="Annotation table (.csv, .tsv, .jsonl): image, split, one column per attribute."),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Card file to write (default: NAME.toml beside the table).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing card file.")] = False,
) -> None:
    """Draft a dataset card for a table-format dataset: attributes from the header, split sizes, positive
    ratios; edit its groups and sentences, then `parbench run --dataset CARD.toml`."""
    from parbench.data.new_card import write_draft_card

    path = write_draft_card(name, from_table, output, force)
    out.print(f"card: {path} (edit the groups and sentences; then parbench run --dataset {path} ...)", highlight=False)
