import gc
import os

import jax
import pytest
from hypothesis import settings


@pytest.fixture
def x64():
    """Run a test in float64 without touching JAX's global configuration afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def full_matmul_precision():
    """References computed outside `simulate` (a process's `run`, dense Hessians) in full
    float32 on GPUs too, as `simulate` computes its own: JAX's default there is TF32."""
    with jax.default_matmul_precision("highest"):
        yield


def _memory_mappings() -> int | None:
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return None


@pytest.fixture(autouse=True)
def release_compiled_programs():
    """Free every compiled program when the process holds too many memory mappings.

    XLA's CPU backend maps each executable into memory in several pieces, and JAX keeps
    every executable a jitted function ever compiled. Over the whole suite in one process
    that passed Linux's limit on mappings per process (vm.max_map_count, 65530), and XLA
    aborted inside its next compile. Clearing JAX's caches frees them; doing it only past
    20000 mappings keeps the programs that neighbouring tests share. Where the count
    cannot be read, the caches are cleared after every test.
    """
    yield
    mappings = _memory_mappings()
    if mappings is None or mappings > 20_000:
        jax.clear_caches()
        gc.collect()


# Property tests draw the same examples on every run, so CI is deterministic; run with
# HYPOTHESIS_PROFILE=explore to search new ones.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
