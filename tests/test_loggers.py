"""--set logger=tensorboard / wandb: the epochs of log.jsonl mirrored where researchers look, offline."""

import json
from pathlib import Path

import pytest

from parbench.engine.run import RunSpec, run

FAST = {"limit": 32, "epochs": 2, "batch_size": 16, "eval_batch_size": 32, "bootstrap": 0}


def _run(tmp_path, logger: str) -> dict:
    return run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            overrides={**FAST, "logger": logger},
            out=str(tmp_path),
            quiet=True,
        )
    )


def test_tensorboard_event_files_hold_every_logged_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rec = _run(tmp_path, "tensorboard")
    events = EventAccumulator(str(Path(rec["run_dir"]) / "tensorboard"))
    events.Reload()
    log = [json.loads(x) for x in (Path(rec["run_dir"]) / "log.jsonl").read_text().splitlines()]
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "select/ma", "select/loss", "speed/images_per_s", "memory/peak_mb"} <= tags
    assert {f"lr/group{i}" for i in range(len(log[0]["lr"]))} <= tags
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert loss == [(r["epoch"], pytest.approx(r["loss"], rel=1e-6)) for r in log]
    ma = [e.value for e in events.Scalars("select/ma")]
    assert ma == pytest.approx([r["select"]["ma"] for r in log], rel=1e-6)


def test_wandb_offline_writes_its_run_folder_with_the_identity_as_id(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: W&B is not configured, so offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    rec = _run(tmp_path / "runs", "wandb")
    folders = list((Path(rec["run_dir"]) / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 and folders[0].name.endswith(rec["key"])
    assert list(folders[0].glob("*.wandb"))  # the offline run's data, for `wandb sync` later


def test_the_logger_is_not_part_of_a_runs_identity():
    a = RunSpec(dataset="synthetic", method="finetune", backbone="parbench-tiny")
    b = RunSpec(dataset="synthetic", method="finetune", backbone="parbench-tiny", overrides={"logger": "tensorboard"})
    assert a.key() == b.key()
