"""`parbench robust`: a finished run's model under common corruptions and adversarial attacks."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from parbench.cli.common import JsonOut, Sets, app, out, overrides, print_json
from parbench.errors import ParbenchError


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def _severities(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ParbenchError("--severities", "comma-separated severities among 0..5, e.g. 1,3,5", repr(text)) from None


@app.command("robust")
def robust_cmd(
    runs: Annotated[list[Path] | None, typer.Argument(help="Finished run folders.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A reference checkpoint (e.g. PromptPAR's released file) instead of runs.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="With --checkpoint: the dataset to evaluate it on.")] = None,
    root: Annotated[Path | None, typer.Option(help="With --checkpoint: the dataset's root.")] = None,
    method: Annotated[str | None, typer.Option(help="With --checkpoint: its method (read off the file).")] = None,
    backbone: Annotated[str | None, typer.Option(help="With --checkpoint: its backbone (read off the file).")] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="With --checkpoint: where its run-like folder is written.")
    ] = Path("runs/reference"),
    set_: Sets = None,
    corruptions: Annotated[
        str | None, typer.Option(help="Comma-separated corruptions (default: all ten; `none` for attacks only).")
    ] = None,
    severities: Annotated[str, typer.Option(help="Comma-separated severities, 1-5 (0 = clean).")] = "1,2,3,4,5",
    attacks: Annotated[str, typer.Option(help="fgsm, pgd, both comma-separated, or none.")] = "fgsm,pgd",
    eps: Annotated[str, typer.Option(help="L-inf radii in [0, 1] pixels, comma-separated.")] = "10/255,4/255",
    steps: Annotated[int, typer.Option(help="PGD steps (step = eps / 4, random start).")] = 10,
    mce_baseline: Annotated[
        str | None, typer.Option(help="Method whose corruption errors the report's mCE is normalised to.")
    ] = None,
    store: Annotated[Path | None, typer.Option(help="Results store to record the robustness rows in.")] = None,
    as_json: JsonOut = False,
) -> None:
    """Evaluate finished runs on their own test split under corruptions (ImageNet-C definitions, seeded per
    image) and FGSM / PGD attacks; one record per perturbation, stored apart from the runs."""
    from parbench.progress import progress_bar
    from parbench.robust.evaluate import DEFAULT_CORRUPTIONS, RobustPlan, parse_eps, robust_evaluate, summary
    from parbench.store import Store

    cs = _names(corruptions)
    plan = RobustPlan(
        corruptions=DEFAULT_CORRUPTIONS if cs is None else tuple(c for c in cs if c != "none"),
        severities=_severities(severities),
        attacks=tuple(a for a in (_names(attacks) or ()) if a != "none"),
        eps=tuple(parse_eps(e) for e in eps.split(",") if e.strip()),
        steps=steps,
        mce_baseline=mce_baseline,
    )
    db = Store(store) if store else None
    if not runs and checkpoint is None:
        raise ParbenchError("parbench robust", "finished run folders, or --checkpoint FILE --dataset NAME", "neither")
    if checkpoint is not None and not dataset:
        raise ParbenchError(
            checkpoint, "--dataset for a reference checkpoint (it does not name its attributes)", "none"
        )
    settings = overrides(None, set_)
    results = {}
    bar = progress_bar(as_json)
    with bar or contextlib.nullcontext():
        for run_dir in runs or []:
            results[str(run_dir)] = robust_evaluate(run_dir, plan, db, bar, settings=settings)
        if checkpoint is not None:
            from parbench.robust.evaluate import reference_run

            folder, built = reference_run(
                checkpoint, dataset, out_dir, str(root) if root else None, method, backbone, settings, bar
            )
            results[str(folder)] = robust_evaluate(folder, plan, db, bar, built)
    if as_json:
        return print_json({k: {"summary": summary(v), "records": v} for k, v in results.items()})
    for run_dir, recs in results.items():
        s = summary(recs)
        line = f"{run_dir}: clean mA {100 * s['clean_ma']:.2f}"
        if s["mean_corrupted_ma"] is not None:
            line += f", corrupted {100 * s['mean_corrupted_ma']:.2f} (relative {s['relative']:.3f})"
        for name, v in s["attacks"].items():
            line += f", {name} {100 * v:.2f}"
        out.print(line, markup=False, highlight=False)
