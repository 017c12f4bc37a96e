"""`parbench suite | report | demo`: grids of runs (here, in parallel, on Slurm), the report, the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from parbench.cli.common import DEFAULT_STORE, JsonOut, StorePath, app, err, out, print_json


@app.command("suite")
def suite_cmd(
    file: Annotated[Path, typer.Argument(help="Suite TOML file.")],
    store: Annotated[Path | None, typer.Option(help="The suite's results store (default: the suite's).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="The suite's folder (default: the suite's).")] = None,
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
    partition: Annotated[str | None, typer.Option(help="Slurm partition (else the suite's [slurm] table).")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    time_min: Annotated[int | None, typer.Option("--time", help="Slurm time limit per job, minutes.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs per Slurm job.")] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs per Slurm job.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the plan (runs, shards, jobs), run nothing.")] = False,
    as_json: JsonOut = False,
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
            return print_json(res)
        out.print(
            f"merged {res['merged']} job records into {res['store']}: {res['runs']} runs, {res['missing']} missing",
            highlight=False,
        )
        for j in res["jobs"]:
            if j["missing"]:
                err.print(
                    f"job {j['job_id']} (shard {j['shard']}): {j['missing']} runs missing; log {j['stderr']}",
                    markup=False,
                    highlight=False,
                )
        return
    k_n = launch.parse_shard(shard)
    if k_n is not None:  # one share, here (what a job or a hand-written sbatch script runs)
        k, n = k_n
        if job_store:
            suite.job_store = str(launch.shard_store(suite, k, n))
        from parbench.suite import pending

        specs = take_shard(suite.specs, k, n)
        todo = pending(suite, specs)
        err.print(
            f"suite {suite.name}, shard {k}/{n}: {len(specs)} runs, {len(specs) - len(todo)} already done, "
            f"{len(todo)} to run",
            highlight=False,
        )
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
    keys = {id(s): s.key() for s in suite.specs}  # each run's identity once, whatever the grid's size
    plan = launch.launch(
        suite, launcher, jobs, slurm, dry_run, log=lambda m: err.print(m, markup=False, highlight=False), keys=keys
    )
    todo = None
    if dry_run:
        from parbench.suite import estimate, pending

        todo = pending(suite, suite.specs, keys)
        plan["estimate"] = estimate(suite, todo)
    if as_json:
        return print_json(plan)
    err.print(
        f"suite {plan['suite']}: {plan['runs']} runs, {plan['done']} already done, {plan['pending']} to run"
        + ("" if launcher == "local" else f" in {len(plan['jobs'])} {launcher} job(s)"),
        highlight=False,
    )
    if dry_run:  # the plan: what it costs, each job with its share, and every pending run
        _print_estimate(plan["estimate"])
        if launcher != "local":
            for j in plan["jobs"]:
                out.print(f"job {j['shard']}: {j['runs']} runs", highlight=False)
        for s in todo:
            out.print(f"{s.dataset} {s.method} {s.backbone} seed={s.seed} key={keys[id(s)]}", highlight=False)
    for j in plan.get("submitted", []):
        out.print(f"job {j['job_id']}: shard {j['shard']}, store {j['store']}, log {j['stderr']}", highlight=False)
    if plan.get("collected"):
        c = plan["collected"]
        out.print(f"collected into {c['store']}: {c['runs']} runs, {c['missing']} missing", highlight=False)


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 3600
        else f"{seconds / 60:.1f} min"
        if seconds >= 60
        else f"{seconds:.0f} s"
    )


def _print_estimate(est: dict) -> None:
    """What the pending runs cost: images to train on and score, and the time at this store's measured speeds."""
    when = "unknown" if est["seconds"] is None else _duration(est["seconds"])
    err.print(
        f"cost: {est['runs']} runs, {est['train_images']:,} training images x epochs, {est['test_images']:,} test "
        f"images; estimated time {when} (at the images/s of finished runs of the same method and backbone)",
        highlight=False,
    )
    for g in est["by_method"]:
        t = "unknown (no finished run to measure)" if g["seconds"] is None else _duration(g["seconds"])
        err.print(
            f"  {g['method']} on {g['backbone']}: {g['runs']} runs, {g['train_images']:,} training images x epochs, "
            f"{t}",
            highlight=False,
        )


@app.command("report")
def report_cmd(
    store: StorePath = Path(DEFAULT_STORE),
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

    path = render_report(
        store,
        out_dir,
        protocol,
        include_smoke,
        warn=lambda line: err.print(line, markup=False, highlight=False),
    )
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
