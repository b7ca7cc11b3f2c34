import jax
import pytest


@pytest.fixture
def x64():
    """Run a test in float64 without touching JAX's global configuration afterwards."""
    with jax.enable_x64(True):
        yield
