"""Opening a prepared 100,000-image dataset (PA100k at full size) must take well under 1 s."""

import pytest

from parbench.data import load_dataset, prepare_dataset
from tests.fixtures import originals


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("PA100k")
    originals.pa100k(r)
    prepare_dataset("PA100k", r)
    return r


def test_open_prepared_pa100k(benchmark, root):
    ds = benchmark(load_dataset, "PA100k", root)
    assert len(ds) == 100000


def test_read_originals_pa100k(benchmark, root):
    """Baseline: reading annotation.mat without the prepared copy."""
    ds = benchmark.pedantic(load_dataset, args=("PA100k", root), kwargs={"use_prepared": False}, rounds=3)
    assert len(ds) == 100000
