"""The data path: loader workers (persistent, any number, same numbers), the decoded-image cache (same pixels,
shared by runs, keyed by content, bounded), and the training step's on-device divergence check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parbench.data import load_dataset
from parbench.data.image_cache import ImageCache, open_cache, split_cache
from parbench.data.torchdata import ImageSplit
from parbench.data.transforms import build_transform
from parbench.engine.config import TrainConfig
from parbench.engine.run import RunSpec, run
from parbench.engine.train import loader_workers
from parbench.errors import Diverged
from tests.fixtures import originals

FAST = {"limit": 32, "epochs": 2, "batch_size": 8, "eval_batch_size": 16, "bootstrap": 0, "cache_images": "off"}


def _run(tmp_path, name, **over):
    return run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            overrides={**FAST, **over},
            out=str(tmp_path / name),
            quiet=True,
        )
    )


@pytest.mark.slow
def test_any_number_of_workers_gives_the_same_numbers(tmp_path):
    """Augmentation is seeded per (seed, epoch, image), and the epoch travels with each index to the (persistent)
    workers: 0, 1 or 4 workers train the same model."""
    recs = [_run(tmp_path, f"w{w}", num_workers=w) for w in (0, 1, 4)]
    assert [r["data_workers"] for r in recs] == [0, 1, 4]
    assert len({r["key"] for r in recs}) == 1  # the worker count is no part of the identity
    for r in recs[1:]:
        assert r["metrics"] == recs[0]["metrics"]
        assert [e["loss"] for e in r["history"]] == [e["loss"] for e in recs[0]["history"]]


def test_default_workers_are_none_on_cpu_and_follow_the_cores_on_cuda(monkeypatch):
    assert loader_workers(-1, torch.device("cpu")) == 0 and loader_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert loader_workers(-1, torch.device("cuda")) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers(-1, torch.device("cuda")) == 3


@pytest.fixture
def wider(tmp_path):
    originals.wider(tmp_path, n_images=(8, 6))
    rng = np.random.default_rng(0)
    for p in (tmp_path / "Image").rglob("*.jpg"):  # textured scenes, so a wrong crop shows
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p, quality=95)
    return load_dataset("WIDER", tmp_path, use_prepared=False)


def _pre(size=(32, 16), letterbox=False):
    from parbench.backbones import Preprocess

    return Preprocess(size=size, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic", letterbox=letterbox)


def test_cached_crops_are_the_decoded_crops_and_are_shared(wider):
    idx = wider.partition("test")
    pre = _pre()
    cfg = TrainConfig()  # cache_images = "auto": on for a boxed source
    info: dict = {}
    cache = split_cache(wider, idx, pre, cfg, info, "test")
    assert cache is not None and info["test"]["decoded_before"] == 0
    t = build_transform(pre, False)
    plain, cached = ImageSplit(wider, idx, t), ImageSplit(wider, idx, t, cache)
    for k in range(len(idx)):
        torch.testing.assert_close(cached[k][0], plain[k][0], rtol=0, atol=0)
    again: dict = {}
    shared = split_cache(wider, idx, pre, cfg, again, "test")  # another run: the same file, already filled
    assert again["test"]["file"] == info["test"]["file"] and again["test"]["decoded_before"] == len(idx)
    torch.testing.assert_close(ImageSplit(wider, idx, t, shared)[0][0], plain[0][0], rtol=0, atol=0)


def test_cache_key_follows_the_images_boxes_and_size(wider, tmp_path):
    idx = wider.partition("test")
    a, _ = open_cache(wider, idx, _pre(), 1.0)
    b, _ = open_cache(wider, idx, _pre(size=(64, 32)), 1.0)
    c, _ = open_cache(wider, idx, _pre(letterbox=True), 1.0)
    assert len({a.path, b.path, c.path}) == 3
    moved = load_dataset("WIDER", tmp_path, use_prepared=False)
    moved.boxes = moved.boxes.copy()
    moved.boxes[idx[0], 0] += 1
    d, _ = open_cache(moved, idx, _pre(), 1.0)
    p = tmp_path / wider.relpaths[idx[0]]
    Image.new("RGB", (64, 48), (1, 2, 3)).save(p)  # an image replaced in place
    e, _ = open_cache(wider, idx, _pre(), 1.0)
    assert len({a.path, d.path, e.path}) == 3


def test_a_split_over_the_bound_is_not_cached_and_old_files_make_room(wider):
    idx = wider.partition("test")
    cache, why = open_cache(wider, idx, _pre(), 1e-9)
    assert cache is None and "over the" in why and "cache_images_gb" in why
    first, _ = open_cache(wider, idx, _pre(), 1.0)
    first.filled()  # created
    size = first.path.stat().st_size
    second, _ = open_cache(wider, idx, _pre(size=(16, 8)), (size + 10) / 2**30)
    second.filled()
    assert not first.path.exists() and second.path.exists()  # the least recently used went


def test_the_cache_reopens_in_another_process():
    import pickle

    c = ImageCache(Path("/tmp/unused.u8"), 2, (3, 2, 2))
    state = pickle.loads(pickle.dumps(c))
    assert state.path == c.path and state._rows is None  # no mapping travels to a worker


@pytest.mark.slow
def test_a_run_with_and_without_the_cache_gives_the_same_numbers(tmp_path, wider):
    recs = []
    for setting in ("off", "on", "on"):
        recs.append(
            run(
                RunSpec(
                    dataset="WIDER",
                    method="finetune",
                    backbone="parbench-tiny",
                    root=str(wider.root),
                    overrides={**FAST, "cache_images": setting, "select_on": "last"},
                    out=str(tmp_path / f"runs-{setting}-{len(recs)}"),
                    quiet=True,
                )
            )
        )
    off, on, warm = recs
    assert off["image_cache"]["train"] == "off"
    assert on["image_cache"]["train"]["decoded_before"] == 0
    assert warm["image_cache"]["train"]["decoded_before"] == on["image_cache"]["train"]["images"]
    assert on["metrics"] == off["metrics"] == warm["metrics"]


def test_divergence_is_caught_on_device_at_its_exact_step():
    """The loss is not read every step (a host sync on a GPU); the first non-finite step is still the one named."""
    from parbench.engine.train import train_epoch

    class Blows(torch.nn.Module):
        num_attributes = 2

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            bad = float("nan") if self.calls == 3 else 0.0
            return {"logits": self.w.expand(len(x), 2) + bad}

    data = torch.utils.data.TensorDataset(torch.zeros(40, 1), torch.zeros(40, 2, dtype=torch.long), torch.arange(40))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model = Blows()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(Diverged) as e:
        train_epoch(model, loader, opt, torch.full((2,), 0.5), TrainConfig(), torch.device("cpu"), epoch=2)
    assert (e.value.epoch, e.value.step) == (2, 3)


def test_a_cached_evaluation_batch_is_gathered_whole_with_the_same_values(wider):
    from parbench.data.torchdata import collate

    idx = wider.partition("test")
    pre = _pre()
    cache, _ = open_cache(wider, idx, pre, 1.0)
    split = ImageSplit(wider, idx, build_transform(pre, False), cache)
    one_by_one = collate([split[k] for k in range(len(idx))])  # fills the cache
    whole = collate(split.__getitems__(list(range(len(idx)))))
    for a, b in zip(whole, one_by_one, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    small = _pre(size=(8, 8))
    fresh = ImageSplit(wider, idx, build_transform(small, False), open_cache(wider, idx, small, 1.0)[0])
    decoded = collate(fresh.__getitems__([0, 1]))  # not cached yet: decoded, then normalised as one batch
    for a, b in zip(decoded, collate([fresh[0], fresh[1]]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    train = ImageSplit(wider, idx, build_transform(pre, True, pad=3), aug_seed=5)
    for a, b in zip(
        collate(train.__getitems__([(0, 2), (1, 2)])), collate([train[(0, 2)], train[(1, 2)]]), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # augmented training batches too


def test_the_epoch_reaches_persistent_workers():
    """One loader serves every epoch; a worker augments each image as its epoch says, exactly as in-process."""
    from parbench.engine.train import epoch_loader

    ds = load_dataset("synthetic")
    idx = ds.partition("train")[:16]
    split = ImageSplit(ds, idx, build_transform(_pre(), True, pad=4, flip=True), aug_seed=0)
    pos = {int(i): k for k, i in enumerate(idx)}
    loader = epoch_loader(split, 8, 0, 1, 1)  # one persistent worker
    for epoch in (1, 2, 3):
        loader.batch_sampler.set_epoch(epoch)
        for x, _, ids in loader:
            want = torch.stack([split[(pos[int(i)], epoch)][0] for i in ids])
            torch.testing.assert_close(x, want, rtol=0, atol=0)
    differs = [not torch.equal(split[(k, 1)][0], split[(k, 2)][0]) for k in range(len(idx))]
    assert any(differs)  # the epoch changes the crops and flips


@pytest.mark.slow
def test_prepare_images_fills_the_cache_a_run_then_reads(tmp_path):
    from typer.testing import CliRunner

    from parbench.cli import app

    res = CliRunner().invoke(
        app, ["datasets", "prepare", "synthetic", "--images", "--method", "finetune", "--backbone", "parbench-tiny"]
    )
    assert res.exit_code == 0, res.output
    assert "image cache train: 384 images 384 decoded now" in res.output or "0 decoded now" in res.output
    rec = _run(tmp_path, "after", cache_images="on", limit=0, epochs=1)
    assert rec["image_cache"]["train"]["decoded_before"] == rec["image_cache"]["train"]["images"]  # all there
