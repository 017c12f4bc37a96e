"""`parbench runs ... | store ...`: list and export the runs of a store, merge stores."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from parbench.cli.common import DEFAULT_STORE, JsonOut, StorePath, err, out, print_json, runs_app, store_app


@runs_app.command("list")
def runs_list(
    store: StorePath = Path(DEFAULT_STORE),
    protocol: Annotated[str, typer.Option(help="Protocol to show.")] = "promptpar",
    as_json: JsonOut = False,
) -> None:
    """One line per finished run (tab-separated when piped, so nothing is cut)."""
    from parbench.store import Store

    rows = [r for r in Store(store, create=False).table() if r["protocol"] == protocol]
    if as_json:
        return print_json(rows)
    cols = ("dataset", "method", "backbone", "seed", "mA", "F1", "trainable", "selected on", "run")
    cells = [
        [
            r["dataset"],
            r["method"],
            r["backbone"],
            str(r["seed"]),
            f"{100 * r['ma']:.2f}",
            f"{100 * r['f1']:.2f}",
            f"{r['trainable_params']:,}",
            r["selected_on"],
            r["run_id"],
        ]
        for r in rows
    ]
    if not out.is_terminal:
        sys.stdout.write("\t".join(cols) + "\n" + "".join("\t".join(c) + "\n" for c in cells))
        return
    t = Table(*cols)
    for c in cells:
        t.add_row(*c)
    out.print(t)


@runs_app.command("export")
def runs_export(
    store: StorePath = Path(DEFAULT_STORE),
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
    warn = lambda line: err.print(line, markup=False, highlight=False)
    n = sum(dst.merge_from(s, warn) for s in sources)
    out.print(f"merged {n} runs into {target}")
