"""Following a run where researchers already look: TensorBoard event files or a W&B run, beside log.jsonl.

`log.jsonl` in the run folder stays the source of truth (resume and the report read it); a logger mirrors each
finished epoch: the training loss, the learning rate of every parameter group, the selection split's metrics and
loss, images per second and peak memory. TensorBoard writes under `<run>/tensorboard/`; W&B writes under
`<run>/wandb/`, offline unless the user configured W&B (parbench.settings.wandb_mode), with the run's identity
key as its id and the resolved settings as its config. Only the process that writes the run folder logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError


def scalars(row: dict) -> dict[str, float]:
    """The numbers of one log.jsonl row, named for a dashboard."""
    out = {
        "train/loss": row["loss"],
        "speed/images_per_s": row.get("images_per_s", 0.0),
        "memory/peak_mb": row.get("peak_mem_mb", 0.0),
    }
    for i, lr in enumerate(row.get("lr", [])):
        out[f"lr/group{i}"] = lr
    sel = row.get("select") or {}
    for k in ("ma", "acc", "prec", "rec", "f1", "loss"):
        if k in sel:
            out[f"select/{k}"] = sel[k]
    return {k: float(v) for k, v in out.items()}


class TensorBoard:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ParbenchError(
                "logger=tensorboard", "the tensorboard package (pip install 'parbench[tensorboard]')", str(e)
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, key: str, name: str, config: dict):
        try:
            import wandb
        except ImportError as e:
            raise ParbenchError("logger=wandb", "the wandb package (pip install 'parbench[wandb]')", str(e)) from None
        from parbench.settings import wandb_mode

        self.run = wandb.init(
            project="parbench", id=key, name=name, dir=str(run_dir), config=config, mode=wandb_mode(), resume="allow"
        )

    def log(self, row: dict) -> None:
        self.run.log(scalars(row), step=row["epoch"])

    def close(self) -> None:
        self.run.finish()


def open_logger(kind: str, run_dir: Path, key: str, name: str, config: dict[str, Any]):
    """The logger a run asked for (`--set logger=...`), or None."""
    if kind == "tensorboard":
        return TensorBoard(run_dir)
    if kind == "wandb":
        return WandB(run_dir, key, name, config)
    return None
