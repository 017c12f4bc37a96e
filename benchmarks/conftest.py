# Benchmarks use the same isolated cache and config as the tests.
from tests.conftest import _isolated_cache  # noqa: F401
