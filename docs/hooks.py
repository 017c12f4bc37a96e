"""MkDocs hooks: the CLI reference is generated from the Typer app on every build (never written by hand), so it
cannot drift from the commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def on_pre_build(config) -> None:
    out = Path(config["docs_dir"]) / "reference" / "cli.md"
    cmd = [sys.executable, "-m", "typer", "parbench.cli.main", "utils", "docs", "--name", "parbench", "--output"]
    subprocess.run([*cmd, str(out)], check=True, capture_output=True)
    text = out.read_text()
    intro = (
        "# Command line\n\nGenerated from the command-line app itself at every docs build (`typer ... utils docs`): "
        "every command, argument and option with its help text and default. Every command also has `--help`.\n\n"
    )
    out.write_text(
        intro + text.replace("# `parbench`", "## `parbench`", 1).replace("\n## `parbench ", "\n### `parbench ")
    )


def on_page_markdown(markdown: str, page, config, files) -> str:
    """`<!-- card: NAME -->` becomes the card's facts, read from the card itself: files, splits and their expected
    sizes, attributes by group, and the published rows it carries (so the pages cannot drift from the cards)."""
    import re

    markdown = re.sub(r"<!-- card: ([^>]+?) -->", lambda m: _card_facts(m.group(1).strip()), markdown)
    markdown = re.sub(r"<!-- recipe: ([^>]+?) -->", lambda m: _recipe(m.group(1).strip()), markdown)
    return re.sub(r"<!-- counts: ([^>]+?) -->", lambda m: _counts(m.group(1).split()), markdown)


def _recipe(name: str) -> str:
    """A method's recipe as the engine resolves it: the settings it changes from TrainConfig's defaults, then what
    each variant and each dataset changes on top (read from the method's declaration)."""
    from dataclasses import asdict

    from parbench.engine.config import TrainConfig
    from parbench.methods import get_method

    spec = get_method(name)
    defaults = asdict(TrainConfig())
    rows = [f"| `{k}` | `{v!r}` | `{defaults.get(k)!r}` |" for k, v in spec.recipe.items()]
    out = ["| setting | this method | engine default |", "|---|---|---|", *rows]
    for kind, table in (("variant", spec.variants), ("dataset", spec.dataset_recipes)):
        for key, over in table.items():
            out.append("")
            out.append(f"With {kind} `{key}`: " + ", ".join(f"`{k} = {v!r}`" for k, v in over.items()) + ".")
    if spec.options is not None:
        opts = asdict(spec.options())
        out += ["", "Method options (`--set KEY=VALUE`): " + ", ".join(f"`{k} = {v!r}`" for k, v in opts.items()) + "."]
    return "\n".join(out) + "\n"


def _counts(args: list[str]) -> str:
    """`<!-- counts: METHOD BACKBONE DATASET [key=value ...] -->`: parameters and FLOPs counted as `parbench methods
    info` counts them (torch's meta device, no weights)."""
    from parbench.info import method_info

    method, backbone, dataset, *rest = args
    over = dict(x.split("=", 1) for x in rest)
    info = method_info(method, backbone, dataset, None, over)
    flops = (
        "not countable on the meta device"
        if info["flops_per_image"] is None
        else f"{info['flops_per_image'] / 1e9:,.1f} GFLOPs per image"
    )
    setting = "".join(f" --set {k}={v}" for k, v in over.items())
    return (
        f"`parbench methods info {method} --backbone {backbone} --dataset {dataset}{setting}`: "
        f"{info['total_params']:,} parameters, {info['trainable_params']:,} trainable ({info['trainable_pct']:.3f}%), "
        f"image tower {info['image_tower_params']:,}; {flops}.\n"
    )


def _card_facts(name: str) -> str:
    from parbench.cards import load_card

    card = load_card(name)
    lines = [
        f"**{card.name}** (`datasets/{Path(card.path).name}`, reader `{card.reader}`): {card.description}.",
        "",
        f"- files read: {', '.join(f'`{f}`' for f in card.source_files)}"
        + (f"; images under `{card.images}/`" if card.images else ""),
        "- splits (expected sizes, partition 0): "
        + ", ".join(f"{s} {n:,}" if n else f"{s} (read from the files)" for s, n in card.splits.items())
        + f"; trains on `{card.train_split}`, selects on `{card.select_split}`, reports `{card.test_split}`"
        + (f"; {card.partitions} partitions" if card.partitions > 1 else ""),
        f"- {card.num_attributes} evaluated attributes: "
        + "; ".join(f"{g} ({len(a)})" for g, a in card.groups().items()),
    ]
    if card.aliases_source:
        lines.append(f"- harmonised aliases (cross-domain): {card.aliases_source}")
    if card.published:
        lines += ["", "| published | backbone | protocol | mA | Acc | Prec | Rec | F1 | source |", "|---" * 9 + "|"]
        for p in card.published:
            cells = ["–" if v is None else f"{v:.2f}" for v in (p.ma, p.acc, p.prec, p.rec, p.f1)]
            lines.append(f"| {p.method} | {p.backbone} | {p.protocol} | {' | '.join(cells)} | {p.source} |")
    return "\n".join(lines) + "\n"
