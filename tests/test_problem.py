import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo


def test_dict_pytree_roundtrip_and_dtype(x64):
    w0 = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    p = fo.Problem(lambda w: jnp.sum(w["a"] ** 2) + jnp.sum(w["b"]), w0, name="dict")
    assert p.n_params == 7 and p.dtype == jnp.float64
    back = p.unravel(p.flat_w0)
    np.testing.assert_array_equal(back["b"], w0["b"])
    assert float(p.flat_loss(p.flat_w0, None)) == pytest.approx(5.0 + 4.0)


def test_float32_is_kept():
    p = fo.Problem(lambda w: jnp.sum(w**2), jnp.ones(3, jnp.float32))
    assert p.dtype == jnp.float32


def test_equinox_model_keeps_static_parts():
    model = eqx.nn.MLP(2, 1, 4, 1, activation=jax.nn.tanh, key=jax.random.key(0))
    x = jnp.ones((5, 2))
    p = fo.Problem(lambda m: jnp.mean(jax.vmap(m)(x) ** 2), model)
    assert p.n_params == 2 * 4 + 4 + 4 + 1
    rebuilt = p.unravel(p.flat_w0)
    np.testing.assert_allclose(jax.vmap(rebuilt)(x), jax.vmap(model)(x))


def test_data_is_passed_to_the_loss():
    p = fo.Problem(lambda w, d: jnp.sum((w - d) ** 2), jnp.zeros(2), data=jnp.array([1.0, 2.0]))
    assert float(p.flat_loss(p.flat_w0, p.data)) == pytest.approx(5.0)


def test_non_scalar_loss_is_rejected():
    with pytest.raises(ValueError, match="scalar"):
        fo.Problem(lambda w: w**2, jnp.ones(3))


def test_nan_loss_at_w0_is_rejected():
    with pytest.raises(ValueError, match="not finite"):
        fo.Problem(lambda w: jnp.sum(jnp.log(w)), -jnp.ones(3))


def test_no_float_leaves_is_rejected():
    with pytest.raises(ValueError, match="no floating-point leaves"):
        fo.Problem(lambda w: jnp.sum(w), jnp.arange(3))


def test_loss_not_callable():
    with pytest.raises(TypeError, match="callable"):
        fo.Problem(3.0, jnp.ones(2))
