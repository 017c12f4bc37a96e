"""Where a suite's runs execute: here (`local`), in N processes here (`local-parallel`), or as jobs on a Slurm
cluster (`slurm`, through submitit).

Jobs never share one SQLite file: SQLite's WAL mode needs shared memory that network filesystems (a cluster's
home or project folder) do not provide. Each job writes its own store under the suite's folder
(`<out>/stores/shard-K-of-N.sqlite`); `collect` merges them into the suite's store, idempotently (a run is keyed
by its identity). A suite's pending runs are those in none of these stores, so running the same command again
re-submits only what is missing (a job that died, a run that was never reached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError
from parbench.suite import Suite, done_keys, job_stores, load_suite, run_suite, shard

LAUNCHERS = ("local", "local-parallel", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each job (suite file `[slurm]` table, then command-line flags)."""

    partition: str = ""  # -p
    account: str = ""  # -A
    qos: str = ""
    time: int = 240  # minutes per job
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: int = 0  # 0: the partition's default
    constraint: str = ""
    setup: tuple[str, ...] = ()  # shell lines before the job starts (module load ..., source venv/bin/activate)


def slurm_options(suite: Suite, overrides: dict[str, Any]) -> SlurmOptions:
    known = {f.name for f in fields(SlurmOptions)}
    given = {**suite.slurm, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParbenchError(
            suite.source or "[slurm]", f"[slurm] keys among {', '.join(sorted(known))}", f"unknown {unknown}"
        )
    if "setup" in given:
        given["setup"] = tuple(given["setup"]) if isinstance(given["setup"], list | tuple) else (str(given["setup"]),)
    return SlurmOptions(**given)


def auto_shard(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(k, n), 1-based, from the launcher's environment: a Slurm array (SLURM_ARRAY_TASK_ID/COUNT, tasks
    numbered from SLURM_ARRAY_TASK_MIN), Slurm tasks (SLURM_PROCID/NTASKS), or torchrun (RANK/WORLD_SIZE)."""
    env = dict(os.environ if env is None else env)
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_ID"]) - lo + 1, int(env["SLURM_ARRAY_TASK_COUNT"])
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]) + 1, int(env["SLURM_NTASKS"])
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]) + 1, int(env["WORLD_SIZE"])
    raise ParbenchError("--shard auto", "SLURM_ARRAY_TASK_ID/COUNT, SLURM_PROCID/NTASKS or RANK/WORLD_SIZE", "none set")


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if value == "auto":
        return auto_shard()
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise ParbenchError("--shard", "k/n (e.g. 2/4) or auto", value) from None
    if not (n >= 1 and 1 <= k <= n):
        raise ParbenchError("--shard", "k/n with 1 <= k <= n", value)
    return k, n


def suite_dir(suite: Suite) -> Path:
    return Path(suite.out)


def shard_store(suite: Suite, k: int, n: int) -> Path:
    return suite_dir(suite) / "stores" / f"shard-{k}-of-{n}.sqlite"


def collect(suite: Suite) -> dict:
    """Merge every job's store into the suite's store (idempotent); say what is still missing."""
    from parbench.store import Store

    target = Store(suite.store)
    merged = sum(target.merge_from(p) for p in job_stores(suite) if p.resolve() != Path(suite.store).resolve())
    have = target.keys()
    missing = [s for s in suite.specs if s.key() not in have]
    return {
        "store": suite.store,
        "merged": merged,
        "runs": target.count(),
        "missing": len(missing),
        "jobs": _job_status(suite),
    }


def run_shard(suite_file: str, k: int, n: int, store: str | None = None, out: str | None = None) -> int:
    """One job: the k-th of n shares of the suite's runs, recorded in the job's own store. Importable, so
    submitit pickles it by reference; returns how many runs it finished. `store`: the suite's main store."""
    suite = load_suite(suite_file, store=store, out=out)
    suite.job_store = str(shard_store(suite, k, n))
    return len(run_suite(suite, shard(suite.specs, k, n), quiet=True))


# ---------------------------------------------------------------------------------------------- launchers
def launch(
    suite: Suite,
    launcher: str = "local",
    jobs: int = 1,
    slurm: dict | None = None,
    dry_run: bool = False,
    log=print,
    cluster: str = "slurm",
    wait: bool = False,
    keys: dict[int, str] | None = None,
) -> dict:
    """Run or submit a suite's pending runs; returns a plan / result summary (what ran, jobs, logs). `keys`:
    id(spec) -> key, where the caller has them already."""
    if launcher not in LAUNCHERS:
        raise ParbenchError("--launcher", f"one of {', '.join(LAUNCHERS)}", repr(launcher))
    if jobs < 1:
        raise ParbenchError("--jobs", "a number of jobs >= 1", str(jobs))
    done = done_keys(suite)
    keys = keys or {id(s): s.key() for s in suite.specs}  # each identity once: a 10,000-run grid hashes 10,000
    todo = [s for s in suite.specs if keys[id(s)] not in done]
    n = 1 if launcher == "local" else jobs
    # shard k of n always holds the same runs (its share of the whole suite, by identity), so a re-submission
    # sends each missing run to the job (and store) that had it; shards with nothing left are not submitted
    shares = {k: [s for s in shard(suite.specs, k, n, keys) if keys[id(s)] not in done] for k in range(1, n + 1)}
    plan = {
        "suite": suite.name,
        "launcher": launcher,
        "runs": len(suite.specs),
        "done": len(suite.specs) - len(todo),
        "pending": len(todo),
        "jobs": [{"shard": f"{k}/{n}", "runs": len(sh)} for k, sh in shares.items() if sh],
    }
    if dry_run or not todo:
        return plan
    if launcher == "local":
        run_suite(suite, todo, on_done=_announce(log))
        return plan
    if launcher == "local-parallel":
        plan["results"] = _local_parallel(suite, n, [k for k, sh in shares.items() if sh], log)
        plan["collected"] = collect(suite)
        return plan
    opts = slurm_options(suite, slurm or {})
    submitted = _submit(suite, n, [k for k, sh in shares.items() if sh], opts, cluster, log)
    if wait:  # block until every job ends (submitit's own polling), then merge
        for job in submitted:
            job.pop("job").result()
        plan["collected"] = collect(suite)
    for job in submitted:
        job.pop("job", None)
    plan["submitted"] = submitted
    return plan


def _announce(log):
    def done(r: dict) -> None:
        if r.get("status") == "finished":
            log(f"done {r['dataset']} {r['method']} seed {r['seed']}: mA {100 * r['metrics']['promptpar']['ma']:.2f}")

    return done


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def _local_parallel(suite: Suite, n: int, shards: list[int], log) -> list[dict]:
    """n processes on this machine, each `parbench suite FILE --shard k/n` into its own store, one GPU each where
    there are GPUs (round-robin), the CPU threads split between them."""
    gpus = _gpu_ids()
    threads = max(1, (os.cpu_count() or 1) // n)
    logs = suite_dir(suite) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in shards:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[(k - 1) % len(gpus)]
        log_path = logs / f"shard-{k}-of-{n}.log"
        cmd = [
            sys.executable,
            "-m",
            "parbench",
            "suite",
            suite.source,
            "--shard",
            f"{k}/{n}",
            "--job-store",
            "--store",
            str(suite.store),
            "--out",
            str(suite.out),
        ]
        fh = open(log_path, "w")  # noqa: SIM115  (closed when the process ends, below)
        procs.append((k, subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT), fh, log_path))
        log(
            f"shard {k}/{n}: pid {procs[-1][1].pid}, log {log_path}"
            + (f", GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else "")
        )
    results = []
    for k, proc, fh, log_path in procs:
        code = proc.wait()
        fh.close()
        results.append({"shard": f"{k}/{n}", "exit": code, "log": str(log_path)})
        if code:
            log(f"shard {k}/{n} failed (exit {code}): see {log_path}")
    return results


def _submit(suite: Suite, n: int, shards: list[int], opts: SlurmOptions, cluster: str, log) -> list[dict]:
    """One submitit job per shard; the manifest (job ids, stores, logs) is written for `--collect`."""
    try:
        import submitit
    except ImportError as e:
        raise ParbenchError("--launcher slurm", "the submitit library (pip install submitit)", str(e)) from None
    folder = suite_dir(suite) / "slurm"
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params: dict[str, Any] = {
        "timeout_min": opts.time,
        "cpus_per_task": opts.cpus_per_task,
        "nodes": 1,
        "tasks_per_node": 1,
        "name": f"parbench-{suite.name}",
    }
    if cluster == "slurm":
        params.update(
            {
                "slurm_" + k: v
                for k, v in (
                    ("partition", opts.partition),
                    ("account", opts.account),
                    ("qos", opts.qos),
                    ("constraint", opts.constraint),
                )
                if v
            }
        )
        if opts.gpus_per_node:
            params["gpus_per_node"] = opts.gpus_per_node
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
        if opts.setup:
            params["slurm_setup"] = list(opts.setup)
    executor.update_parameters(**params)
    jobs = []
    for k in shards:
        store = str(shard_store(suite, k, n))
        try:
            job = executor.submit(run_shard, suite.source, k, n, str(suite.store), str(suite.out))
        except Exception as e:  # sbatch refused (no such partition, no Slurm here): one line
            raise ParbenchError(
                "sbatch", "a job accepted by Slurm", f"{type(e).__name__}: {str(e).strip()[:300]}"
            ) from None
        entry = {
            "job_id": str(job.job_id),
            "shard": f"{k}/{n}",
            "store": store,
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        }
        jobs.append({**entry, "job": job})
        log(f"submitted shard {k}/{n}: job {job.job_id} (log {job.paths.stderr})")
    manifest = folder / "jobs.json"
    old = json.loads(manifest.read_text()) if manifest.is_file() else []
    from parbench.atomic import write_text

    new = [{k: v for k, v in j.items() if k != "job"} | {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S")} for j in jobs]
    write_text(manifest, json.dumps(old + new, indent=1))
    return jobs


def _job_status(suite: Suite) -> list[dict]:
    """Each submitted job with its shard's state: complete, or its missing runs and where its log is."""
    manifest = suite_dir(suite) / "slurm" / "jobs.json"
    if not manifest.is_file():
        return []
    done = done_keys(suite)
    out = []
    for j in json.loads(manifest.read_text()):
        k, n = (int(x) for x in j["shard"].split("/"))
        missing = [s for s in shard(suite.specs, k, n) if s.key() not in done]
        out.append({**j, "missing": len(missing)})
    latest = {j["shard"]: j for j in out}  # a re-submitted shard: its latest job speaks for it
    return list(latest.values())
