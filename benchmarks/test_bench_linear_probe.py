"""Linear probe on cached features vs re-encoding the images every epoch (10 epochs, tiny backbone).

Baseline: `reencode` runs the frozen encoder over the training images in each of the 10 epochs, as a loop
without a feature cache would. Candidate: `cached` encodes once (first call fills the disk cache, later rounds
read it) and trains the head on tensors. Compare the two means in the same run: the ratio is the speed-up.
"""

import numpy as np
import pytest
import torch

from baselines.linear_probe import LinearProbe
from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.data import load_dataset
from parbench.data.torchdata import ImageSplit
from parbench.data.transforms import build_transform
from parbench.engine.config import TrainConfig
from parbench.engine.features import FeatureHead, cached_features
from parbench.engine.train import epoch_loader, fit, seed_everything

EPOCHS = 10


@pytest.fixture(scope="module")
def setup():
    seed_everything(0)
    card = load_card("synthetic")
    ds = load_dataset("synthetic")
    bb = create_backbone("parbench-tiny")
    model = LinearProbe(bb, card.num_attributes)
    tf = build_transform(bb.preprocess, False)
    idx = ds.partition("train")[:256]
    cfg = TrainConfig(epochs=EPOCHS, batch_size=64, eval_batch_size=64, bootstrap=0)
    pos = (ds.labels[idx] == 1).mean(0).astype(np.float32)
    return model, ds, idx, tf, cfg, pos


def test_reencode_each_epoch(benchmark, setup):
    model, ds, idx, tf, cfg, _pos = setup

    def train():
        opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr)
        for epoch in range(1, EPOCHS + 1):
            for images, labels, _ in epoch_loader(ImageSplit(ds, idx, tf), cfg.batch_size, 0, epoch, 0):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(images)["logits"], (labels == 1).float()
                )
                opt.zero_grad()
                loss.backward()
                opt.step()

    benchmark.pedantic(train, rounds=3, iterations=1)


def test_cached_features(benchmark, setup):
    model, ds, idx, tf, cfg, pos = setup

    def train():
        feats = cached_features(model, ds, idx, tf, torch.device("cpu"), cfg, {"bench": "lp"})
        fit(FeatureHead(model), feats, None, pos, cfg, 0, torch.device("cpu"), "last")

    benchmark.pedantic(train, rounds=3, iterations=1)
