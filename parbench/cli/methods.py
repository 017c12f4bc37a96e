"""`parbench methods ...`: the registered methods and their parameter counts and FLOPs."""

from __future__ import annotations

from typing import Annotated

import typer

from parbench.cli.common import JsonOut, Sets, methods_app, out, overrides, print_json


@methods_app.command("list")
def methods_list(
    filter: Annotated[str | None, typer.Option(help="fnmatch pattern, e.g. 'prompt*'.")] = None,
    as_json: JsonOut = False,
) -> None:
    """List the methods: built in, and those installed packages provide (entry-point group parbench.methods),
    each with where it comes from."""
    from parbench.methods import list_methods, method_rows

    rows = method_rows(list_methods(filter))
    if as_json:
        return print_json(rows)
    for r in rows:
        out.print(f"[bold]{r['name']}[/]  {r['description']}  [dim]({r['origin_text']})[/]", highlight=False)


@methods_app.command("info")
def methods_info(
    method: Annotated[str, typer.Argument(help="Method name, or a plugin as module:ATTR / file.py:ATTR.")],
    backbone: Annotated[
        str | None,
        typer.Option(
            help="open_clip model name (ViT-L-14, parbench-tiny) or timm:NAME (timm:resnet50); the method's own "
            "default (as `run` uses) if omitted."
        ),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset whose attributes size the heads.")] = None,
    num_attributes: Annotated[int | None, typer.Option(help="Number of attributes, instead of --dataset.")] = None,
    variant: Annotated[str | None, typer.Option(help="PromptPAR variant: fixed or reference.")] = None,
    set_: Sets = None,
    as_json: JsonOut = False,
) -> None:
    """Total and trainable parameter counts, counted on torch's meta device (no memory, seconds)."""
    from parbench.info import method_info

    settings = overrides(None, set_)
    if variant:
        settings["variant"] = variant
    info = method_info(method, backbone, dataset, num_attributes, settings)
    if as_json:
        return print_json(info)
    flops = info["flops_per_image"]
    cost = "FLOPs not countable on the meta device" if flops is None else f"{flops / 1e9:,.1f} GFLOPs per image"
    out.print(
        f"{info['method']} on {info['backbone']} ({info['num_attributes']} attributes, {info['activation']}): "
        f"{info['total_params']:,} total, {info['trainable_params']:,} trainable ({info['trainable_pct']:.3f}%); "
        f"image tower {info['image_tower_params']:,}; {cost}",
        highlight=False,
    )
