"""Suites beyond one process: shards from a launcher's environment, N local processes, submitit's local
executor, and a real single-node Slurm. Each job writes its own store; collecting merges them once."""

import json
import re
import subprocess
import sys

import pytest

from parbench import launch
from parbench.store import Store
from parbench.suite import load_suite
from tests.fixtures.slurm import single_node_slurm, wait_for_queue

SUITE = """name = "mini"
datasets = ["synthetic"]
methods = ["zeroshot", "linear-probe"]
backbones = ["parbench-tiny"]
seeds = [0, 1]
out = "{out}"
[set]
limit = 48
bootstrap = 0
epochs = 2
"""


def _suite(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text(SUITE.format(out=tmp_path / "runs"))
    return path


def _every_run_once(suite):
    store = Store(suite.store, create=False)
    keys = [r["key"] for r in store.records()]
    assert sorted(keys) == sorted(s.key() for s in suite.specs) and len(set(keys)) == len(keys)


def test_auto_shard_reads_slurm_arrays_tasks_and_torchrun():
    assert launch.auto_shard(
        {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}
    ) == (3, 4)
    assert launch.auto_shard({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}) == (1, 2)
    assert launch.auto_shard({"RANK": "3", "WORLD_SIZE": "4"}) == (4, 4)
    from parbench.errors import ParbenchError

    with pytest.raises(ParbenchError, match="SLURM_ARRAY_TASK_ID"):
        launch.auto_shard({})


def test_dry_run_shows_the_plan(tmp_path):
    suite = load_suite(_suite(tmp_path))
    plan = launch.launch(suite, "local-parallel", jobs=3, dry_run=True)
    assert plan["pending"] == 4 and sum(j["runs"] for j in plan["jobs"]) == 4 and len(plan["jobs"]) == 3
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_local_parallel_processes_write_their_own_stores_and_collect(tmp_path):
    path = _suite(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", "suite", str(path), "--launcher", "local-parallel", "--jobs", "2", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(proc.stdout)
    assert [r["exit"] for r in plan["results"]] == [0, 0] and plan["collected"]["missing"] == 0
    suite = load_suite(path)
    _every_run_once(suite)
    assert len(list((tmp_path / "runs" / "stores").glob("shard-*.sqlite"))) == 2
    again = launch.launch(suite, "local-parallel", jobs=2)  # nothing left: nothing runs, no job starts
    assert again["pending"] == 0 and again["jobs"] == []


@pytest.mark.slow
def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    suite = load_suite(_suite(tmp_path))
    plan = launch.launch(suite, "slurm", jobs=2, slurm={"cpus_per_task": 1, "time": 10}, cluster="local", wait=True)
    assert len(plan["submitted"]) == 2 and plan["collected"]["missing"] == 0
    _every_run_once(suite)
    assert launch.collect(suite)["merged"] == 4 and Store(suite.store).count() == 4  # collecting again: idempotent


@pytest.mark.slow
def test_real_single_node_slurm(tmp_path):
    pytest.importorskip("submitit")
    path = _suite(tmp_path)
    with single_node_slurm(tmp_path / "slurm") as (env, start_s):

        def parbench(*args):
            proc = subprocess.run(
                [sys.executable, "-m", "parbench", "suite", str(path), *args], capture_output=True, text=True, env=env
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            return proc

        sub = parbench("--launcher", "slurm", "--jobs", "2", "--cpus", "1", "--time", "30")
        ids = re.findall(r"^job (\d+): shard", sub.stdout, re.M)
        assert len(ids) == 2, sub.stdout
        wait_for_queue(env, ids)
        parbench("--collect")
        suite = load_suite(path)
        _every_run_once(suite)
        # a job that lost its work: listed with its log, and the same command re-submits only its shard
        manifest = json.loads((tmp_path / "runs" / "slurm" / "jobs.json").read_text())
        victim = manifest[0]
        lost = Store(victim["store"], create=False).records()[0]
        import sqlite3

        for store in (victim["store"], suite.store):
            with sqlite3.connect(store) as con:
                con.execute("DELETE FROM runs WHERE run_id = ?", (lost["run_id"],))
        listed = subprocess.run(
            [sys.executable, "-m", "parbench", "suite", str(path), "--collect"], capture_output=True, text=True, env=env
        )
        assert f"shard {victim['shard']}" in listed.stderr and victim["stderr"] in listed.stderr
        resub = parbench("--launcher", "slurm", "--jobs", "2", "--cpus", "1", "--time", "30")
        again = re.findall(r"^job (\d+): shard (\S+),", resub.stdout, re.M)
        assert [s for _, s in again] == [victim["shard"]]
        wait_for_queue(env, [i for i, _ in again])
        parbench("--collect")
        _every_run_once(suite)
        from parbench.report.render import render_report

        assert render_report(suite.store, tmp_path / "report", include_smoke=True).is_file()
    print(f"single-node Slurm accepted jobs {start_s:.2f} s after its daemons started")
