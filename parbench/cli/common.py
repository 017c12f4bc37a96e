"""Shared pieces of the `parbench` command line: the Typer apps, the consoles (messages to stderr, so `--json`
leaves stdout machine-clean), and the option types every command uses, defined once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from parbench import __version__

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark and zero-shot evaluation suite for pedestrian attribute recognition.",
)
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

# the options many commands share
JsonOut = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout (messages go to stderr).")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Setting key=value (repeatable).")]
Root = Annotated[
    Path | None,
    typer.Option(help="Dataset folder (or set it once: PARBENCH_ROOT_<NAME> or [roots] in the config)."),
]
Partition = Annotated[int, typer.Option(help="Random partition (0-4 where the dataset has 5).")]
StorePath = Annotated[Path, typer.Option(help="Results store.")]


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


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=float) + "\n")


def overrides(config: Path | None, sets: list[str] | None) -> dict:
    """--config file (its top level and every table), then --set key=value, as one dict of settings."""
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


def print_metrics(metrics: dict) -> None:
    for proto, mm in metrics.items():
        out.print(
            f"{proto:10s} mA {100 * mm['ma']:.2f}  Acc {100 * mm['acc']:.2f}  Prec {100 * mm['prec']:.2f}  "
            f"Rec {100 * mm['rec']:.2f}  F1 {100 * mm['f1']:.2f}",
            highlight=False,
        )
