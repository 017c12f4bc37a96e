import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test (module-scoped fixtures too) uses parbench caches and config under a temp folder."""
    base = tmp_path_factory.getbasetemp() / "parbench-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARBENCH_CACHE", str(base / "cache"))
        mp.setenv("PARBENCH_CONFIG", str(base / "config.toml"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        for k in list(os.environ):
            if k.startswith("PARBENCH_ROOT_"):
                mp.delenv(k)
        yield
