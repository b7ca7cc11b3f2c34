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


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Free every compiled program after each test module.

    XLA's CPU backend maps each executable into memory in several pieces, and JAX keeps
    every executable a jitted function ever compiled. Over the whole suite in one process
    that passed Linux's limit on memory mappings per process (vm.max_map_count, 65530)
    and XLA aborted inside its next compile. Clearing JAX's caches frees them.
    """
    yield
    jax.clear_caches()
    gc.collect()


# Property tests draw the same examples on every run, so CI is deterministic; run with
# HYPOTHESIS_PROFILE=explore to search new ones.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
