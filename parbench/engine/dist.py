"""torch.distributed for the engine: `torchrun --nproc-per-node N -m parbench run ...`.

The design keeps a multi-process run equal to a one-process run with the same seed:
- every step processes the same *global* batch as one process would (one seeded permutation per epoch, each
  global batch cut into N contiguous chunks, one per rank), and each rank's loss is weighted by its share of
  the global batch, so DDP's gradient average is exactly the one-process batch mean;
- augmentation is seeded per image (ImageSplit.aug_seed), not per process;
- evaluation is sharded and gathered back into dataset order, so metrics are computed on all samples once.
Only rank 0 writes (run folder, checkpoints, logs, store); every rank may read (resume).
"""

from __future__ import annotations

import atexit
import os

import numpy as np
import torch
import torch.distributed as td


def world_size() -> int:
    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def rank() -> int:
    return td.get_rank() if td.is_available() and td.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or an equivalent launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_pref: str = "auto") -> None:
    """Join the process group torchrun describes: NCCL on GPUs, gloo on CPU. No-op for one process."""
    if not launched() or td.is_initialized():
        return
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    td.init_process_group(backend="nccl" if use_cuda else "gloo")
    atexit.register(lambda: td.is_initialized() and td.destroy_process_group())


def device(device_pref: str = "auto") -> torch.device:
    if device_pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0)
        return torch.device("cpu")
    return torch.device(device_pref)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This rank's chunk of each global batch of one seeded permutation (the whole batch for one process).

    Yields index lists; `weights[step]` is this rank's share of that step's global batch times the world size
    (1.0 when the chunks are equal), the factor that makes DDP's mean of per-rank means the global mean. A rank
    whose chunk would be empty gets one sample with weight 0, so that every rank joins every all-reduce.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = False):
        self.n, self.batch_size = n, batch_size
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen).tolist() if shuffle else list(range(n))
        r, w = rank(), world_size()
        self.batches, self.weights = [], []
        globs = [order[s : s + batch_size] for s in range(0, n, batch_size)]
        if drop_last and len(globs) > 1 and len(globs[-1]) < batch_size:  # the references' drop_last=True
            globs.pop()
        if len(globs) > 1 and len(globs[-1]) < 2 * w:
            # a last batch of one sample per process would break BatchNorm in training (PromptPAR's heads):
            # it joins the batch before it instead of being dropped
            globs[-2] += globs.pop()
        for glob in globs:
            chunk = np.array_split(np.asarray(glob), w)[r].tolist()
            if chunk:
                self.batches.append(chunk)
                self.weights.append(len(chunk) * w / len(glob))
            else:
                self.batches.append(glob[:1])
                self.weights.append(0.0)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochBatches(torch.utils.data.Sampler):
    """The training batches of one epoch after another from one loader (so its workers persist across epochs):
    `set_epoch(e)` draws epoch e's `GlobalBatchSampler`, and every index goes out tagged with its epoch, so a
    worker process seeds the image's augmentation by (seed, epoch, image) without any state sent to it (for
    datasets that declare `takes_epoch`, like `ImageSplit`; others get plain indices)."""

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = False, tag: bool = True):
        self.n, self.batch_size, self.seed, self.drop_last, self.tag = n, batch_size, seed, drop_last, tag
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._batches = GlobalBatchSampler(self.n, self.batch_size, self.seed, epoch, drop_last=self.drop_last)

    @property
    def weights(self) -> list[float]:
        return self._batches.weights

    def __iter__(self):
        if not self.tag:  # a dataset without augmentation (tensors): plain indices
            return iter(self._batches.batches)
        e = self.epoch
        return iter([[(i, e) for i in batch] for batch in self._batches.batches])

    def __len__(self) -> int:
        return len(self._batches)


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation shard: indices rank, rank + N, ... (padded with repeats to equal length)."""

    def __init__(self, n: int):
        w = world_size()
        self.n, self.per = n, -(-n // w) if n else 0
        idx = list(range(n)) + list(range(n))[: self.per * w - n] if n else []
        self.indices = idx[rank() :: w]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def gather_shards(local: np.ndarray, n: int) -> np.ndarray:
    """Inverse of ShardSampler: every rank's rows back in dataset order (padding dropped)."""
    w = world_size()
    if w == 1:
        return local
    parts: list = [None] * w
    td.all_gather_object(parts, local)
    per = max(len(p) for p in parts)
    out = np.empty((per * w, *local.shape[1:]), dtype=local.dtype)
    for r, p in enumerate(parts):
        out[r::w][: len(p)] = p
    return out[:n]


def wrap(model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """DistributedDataParallel when running with several processes; the model itself otherwise."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [dev.index] if dev.type == "cuda" else None
    if dev.type == "cuda":  # BatchNorm over the global batch, as one process computes it (GPU-only in torch)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # a model declares whether some trainable tensors can go without a gradient (PromptPAR's reference text
    # prompts); DDP must then look for them every step
    return DDP(model, device_ids=ids, find_unused_parameters=bool(getattr(model, "ddp_find_unused", False)))
