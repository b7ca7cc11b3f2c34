import os

import jax
import pytest
from hypothesis import settings


@pytest.fixture
def x64():
    """Run a test in float64 without touching JAX's global configuration afterwards."""
    with jax.enable_x64(True):
        yield


# Property tests draw the same examples on every run, so CI is deterministic; run with
# HYPOTHESIS_PROFILE=explore to search new ones.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
