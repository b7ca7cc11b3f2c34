"""Built-in networks and offline datasets: derivatives against finite differences."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo
from flowode._spectral import hvp

NETWORKS = {
    "digits_mlp": lambda loss: fo.problems.digits_mlp(n=16, width=8, loss=loss, dtype=jnp.float64),
    "digits_cnn": lambda loss: fo.problems.digits_cnn(
        n=16, channels=3, loss=loss, dtype=jnp.float64
    ),
    "sorting_transformer": lambda loss: fo.problems.sorting_transformer(
        n=8, length=4, vocab=5, d_model=8, loss=loss, dtype=jnp.float64
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_derivatives_match_finite_differences(x64, name, loss):
    p = NETWORKS[name](loss)
    f = lambda w: p.flat_loss(w, p.data)
    w = p.flat_w0
    assert w.dtype == jnp.float64 and np.isfinite(float(f(w)))
    v = jax.random.normal(jax.random.key(1), w.shape, w.dtype)
    v = v / jnp.linalg.norm(v)
    h = 1e-5
    f, grad = jax.jit(f), jax.jit(jax.grad(f))  # compiled: op-by-op dispatch is slower
    fd_grad = (f(w + h * v) - f(w - h * v)) / (2 * h)
    assert float(jnp.vdot(grad(w), v)) == pytest.approx(float(fd_grad), rel=1e-6, abs=1e-9)
    fd_hvp = (grad(w + h * v) - grad(w - h * v)) / (2 * h)
    Hv = jax.jit(lambda w, v: hvp(p.flat_loss, w, v, p.data))(w, v)
    np.testing.assert_allclose(Hv, fd_hvp, rtol=1e-5, atol=1e-8)


def test_networks_are_seeded_and_deterministic():
    a, b = fo.problems.digits_cnn(n=32, seed=3), fo.problems.digits_cnn(n=32, seed=3)
    np.testing.assert_array_equal(a.flat_w0, b.flat_w0)
    np.testing.assert_array_equal(a.data[0], b.data[0])
    c = fo.problems.digits_cnn(n=32, seed=4)
    assert not np.array_equal(a.flat_w0, c.flat_w0)
    assert a.flat_w0.dtype == jnp.float32


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_classification_losses_match_their_definitions(x64, loss):
    p = fo.problems.digits_mlp(n=16, classes=(3, 5, 7), loss=loss, dtype=jnp.float64)
    x, y = (np.asarray(a) for a in p.data)
    assert set(np.unique(y)) <= {0, 1, 2}
    z = np.asarray(jax.vmap(p.unravel(p.flat_w0))(jnp.asarray(x)))  # (16, 3)
    onehot = np.eye(3)[y]
    if loss == "mse":
        want = 0.5 * np.mean(np.sum((z - onehot) ** 2, axis=1))
    else:
        want = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(16), y])
    assert float(p.flat_loss(p.flat_w0, p.data)) == pytest.approx(want, rel=1e-12)


def test_digits_classes_normalisation_and_subsets():
    x, y = fo.problems.digits(classes=(7, 1))
    raw_x, raw_y = fo.problems.digits(classes=(7, 1), normalize="none")
    assert x.shape == (361, 64) and set(np.unique(y)) == {0, 1}
    # Labels follow the order of `classes`: 7 -> 0, 1 -> 1.
    from sklearn.datasets import load_digits

    d_x, d_y = load_digits(return_X_y=True)
    keep = np.isin(d_y, (7, 1))
    np.testing.assert_array_equal(y, np.where(d_y[keep] == 7, 0, 1))
    np.testing.assert_allclose(raw_x, d_x[keep], rtol=1e-6)
    std = np.asarray(x).std(0)
    assert np.allclose(np.asarray(x).mean(0), 0, atol=1e-5)
    assert np.allclose(std[std > 0], 1, atol=1e-4)
    unit, _ = fo.problems.digits(classes=(7, 1), normalize="unit")
    assert float(unit.max()) == 1.0
    sub_x, _ = fo.problems.digits(50, seed=2)
    assert sub_x.shape == (50, 64)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"classes": (1, 1)}, "classes"),
        ({"classes": (10,)}, "classes"),
        ({"n": 0}, "n must be"),
        ({"n": 10_000}, "n must be"),
        ({"normalize": "zscore"}, "normalize"),
    ],
)
def test_digits_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        fo.problems.digits(**kwargs)


def test_sorting_task_targets_are_sorted_tokens():
    tokens, targets = fo.problems.sorting_task(n=64, length=7, vocab=5, seed=1)
    assert tokens.shape == targets.shape == (64, 7)
    assert int(tokens.max()) < 5 and int(tokens.min()) >= 0
    np.testing.assert_array_equal(targets, np.sort(tokens, axis=1))
    with pytest.raises(ValueError, match="vocab"):
        fo.problems.sorting_task(vocab=0)


def test_cifar10_reads_existing_batches_and_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not download"):
        fo.problems.cifar10(tmp_path)
    rng = np.random.default_rng(0)
    for i in (1, 2):
        batch = {
            b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, 20)),
        }
        with open(tmp_path / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch, fh)
    x, y = fo.problems.cifar10(tmp_path, classes=tuple(range(10)))
    assert x.shape == (40, 3, 32, 32) and y.shape == (40,)
    np.testing.assert_allclose(np.asarray(x).mean((0, 2, 3)), 0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, lr", [(fo.problems.digits_mlp, 0.6), (fo.problems.digits_cnn, 0.25)]
)
def test_digits_gd_reaches_eos_and_both_flows_end_closer_than_gradient_flow(make, lr):
    flows = ("gd", "gradient", fo.CentralFlow(max_k=2), "rod")
    ds = fo.simulate(make(), lr=lr, steps=1000, flows=flows, eig_every=5, eigs_at="both")
    # At EOS the sharpness at GD's iterates flips with them (on the CNN between about 2.02
    # and 2.21 at steps 900-1000, the mean of the two 2.11, checked against LOBPCG); the
    # time-averaged point, GD's midpoint, is where the models put ηS = 2.
    gd_sharp = lr * ds.sharpness.sel(flow="gd").values[-200:]
    mid_sharp = lr * ds.sharpness.sel(flow="midpoint").values[-200:]
    assert np.nanmin(gd_sharp) > 1.9
    assert abs(np.nanmean(mid_sharp) - 2) <= 0.1
    final = ds.center_distance_to_gd.isel(step=-1)
    assert final.sel(flow="central") < final.sel(flow="gradient")
    assert final.sel(flow="rod") < final.sel(flow="gradient")
