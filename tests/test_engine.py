"""Runs on synthetic data with the tiny backbone: every method, determinism, resume after SIGKILL."""

import json
import os
import signal

import pytest

from parbench.engine.run import RunSpec, run
from parbench.engine.schedule import lr_at
from tests.fixtures import processes

FAST = {"limit": 96, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 50}


def _run(method, tmp_path, seed=0, **over):
    spec = RunSpec(
        dataset="synthetic",
        method=method,
        backbone="parbench-tiny",
        seed=seed,
        out=str(tmp_path / "runs"),
        overrides={**FAST, **over},
        quiet=True,
        store=str(tmp_path / "store.sqlite"),
    )
    return run(spec)


@pytest.mark.parametrize("method,over", [
    ("linear-probe", {"epochs": 3}),
    ("finetune", {"epochs": 1}),
    ("zeroshot", {}),
    ("promptpar", {"epochs": 1, "fusion_dim": 32, "fusion_heads": 2, "vis_prompt": 10}),
])  # fmt: skip
def test_every_method_runs_on_cpu(method, over, tmp_path):
    rec = _run(method, tmp_path, **over)
    for proto in ("promptpar", "rethinking"):
        m = rec["metrics"][proto]
        assert 0.0 <= m["ma"] <= 1.0 and len(m["label_ma"]) == 12
    assert rec["trainable_params"] <= rec["total_params"]
    assert rec["smoke"] is True  # --limit marks the run
    assert os.path.isfile(os.path.join(rec["run_dir"], "predictions.npz"))
    if method == "zeroshot":
        assert rec["trainable_params"] == 0
    else:
        assert rec["selected_on"] == "val" and rec["selected_on_test"] is False


def test_same_seed_same_numbers(tmp_path):
    a = _run("finetune", tmp_path / "a", epochs=2)
    b = _run("finetune", tmp_path / "b", epochs=2)
    assert a["metrics"] == b["metrics"]
    c = _run("finetune", tmp_path / "c", seed=1, epochs=2)
    assert c["metrics"] != a["metrics"]


def test_schedule_matches_reference_trajectory():
    # PromptPAR's fusion group: lr 8e-3, warm-up 5; prompt group: 4e-3, warm-up 10; 100 epochs
    assert lr_at(1, 8e-3, 100, 5) == pytest.approx(1.664e-3)
    assert lr_at(5, 8e-3, 100, 5) == pytest.approx(7.95e-3, rel=1e-3)
    assert lr_at(1, 4e-3, 100, 10) == pytest.approx(4.36e-4)
    assert lr_at(50, 8e-3, 100, 5) == pytest.approx(4.008e-3, rel=1e-3)
    assert lr_at(100, 8e-3, 100, 5) == pytest.approx(1.6e-5)


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_metrics(tmp_path):
    over = {**FAST, "epochs": 6, "limit": 160}
    sets = [x for k, v in over.items() for x in ("--set", f"{k}={v}")]
    proc = processes.start(
        [
            "run",
            "--dataset",
            "synthetic",
            "--method",
            "finetune",
            "--backbone",
            "parbench-tiny",
            "--out",
            str(tmp_path / "killed"),
            *sets,
        ]
    )
    log = processes.wait_for_epochs(proc, tmp_path / "killed", 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (log.parent / "record.json").exists()  # killed before the end
    resumed = run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            out=str(tmp_path / "killed"),
            overrides=over,
            resume=True,
            quiet=True,
        )
    )
    straight = run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            out=str(tmp_path / "straight"),
            overrides=over,
            quiet=True,
        )
    )
    assert resumed["metrics"] == straight["metrics"]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4, 5, 6]
