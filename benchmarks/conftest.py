import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets parbench caches and config under a temp folder, never the user's."""
    base = tmp_path_factory.getbasetemp() / "parbench-home"
    monkeypatch.setenv("PARBENCH_CACHE", str(base / "cache"))
    monkeypatch.setenv("PARBENCH_CONFIG", str(base / "config.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for k in list(os.environ):
        if k.startswith("PARBENCH_ROOT_"):
            monkeypatch.delenv(k)
