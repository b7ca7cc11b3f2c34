"""Networks in Equinox on offline data: MLPs, a small CNN and a sorting Transformer."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._problem import Problem
from ._data import digits, sorting_task


def gaussian_regression(
    n: int = 128,
    d_in: int = 8,
    d_out: int = 1,
    *,
    target_scale: float = 2.0,
    seed: int = 0,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """Inputs x ~ N(0, I) and independent targets y ~ N(0, target_scale²), seeded.

    Fitting random targets needs large weights, which is what makes the sharpness rise
    (progressive sharpening) until GD reaches the edge of stability.
    """
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d_in), dtype=dtype)
    y = target_scale * jax.random.normal(ky, (n, d_out), dtype=dtype)
    return x, y


def mlp_regression(
    width: int = 16,
    depth: int = 2,
    n: int = 128,
    d_in: int = 8,
    d_out: int = 1,
    *,
    seed: int = 0,
    dtype=jnp.float32,
) -> Problem:
    """A swish MLP d_in-width-…-width-d_out fit by MSE to `gaussian_regression` data.

    The default (8-16-16-1, 433 parameters, 128 points) reaches the edge of stability
    at η = 0.1 within 1000 steps.
    """
    km = jax.random.fold_in(jax.random.key(seed), 1)
    x, y = gaussian_regression(n, d_in, d_out, seed=seed, dtype=dtype)
    model = _cast(eqx.nn.MLP(d_in, d_out, width, depth, activation=jax.nn.swish, key=km), dtype)
    name = f"mlp-{d_in}-{'-'.join([str(width)] * depth)}-{d_out}"
    return Problem(_mse_regression, model, name=name, data=(x, y))


def _cast(model, dtype):
    """The model with its floating-point arrays in `dtype`."""
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model
    )


def _mse_regression(model, data):
    x, y = data
    pred = jax.vmap(model)(x)
    return 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))


class _Classification(eqx.Module):
    """Mean loss of a model's logits (..., C) against integer labels (...): "mse"
    (½‖z − onehot‖², as in the edge-of-stability papers) or "ce" (softmax cross-entropy).

    A module rather than a closure: two equal settings compare equal, so problems of the
    same family share compiled programs.
    """

    kind: str = eqx.field(static=True)
    n_classes: int = eqx.field(static=True)
    batched: bool = eqx.field(static=True)  # the model takes a whole batch

    def __check_init__(self):
        if self.kind not in ("mse", "ce"):
            raise ValueError(f"loss must be 'mse' or 'ce', got {self.kind!r}.")

    def __call__(self, model, data):
        x, y = data
        z = model(x) if self.batched else jax.vmap(model)(x)
        if self.kind == "mse":
            return 0.5 * jnp.mean(jnp.sum((z - jax.nn.one_hot(y, self.n_classes)) ** 2, -1))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[..., None], -1))


def _classification_problem(model, inputs, labels, *, loss, n_classes, name, dtype, batched=False):
    """A Problem fitting `model` (one example -> logits, or a whole batch if `batched`)."""
    objective = _Classification(loss, n_classes, batched)
    return Problem(objective, _cast(model, dtype), name=name, data=(inputs, labels))


def digits_mlp(
    n: int = 512,
    width: int = 32,
    depth: int = 2,
    *,
    classes: tuple[int, ...] = tuple(range(10)),
    loss: str = "mse",
    activation=jax.nn.swish,
    seed: int = 0,
    dtype=jnp.float32,
) -> Problem:
    """An MLP 64-width-…-width-C on `n` of scikit-learn's bundled digits, MSE or cross-entropy.

    The default (64-32-32-10, 3466 parameters, 512 images, MSE on one-hot labels) reaches
    the edge of stability at η = 0.6 after about 360 steps.
    """
    x, y = digits(n, classes, seed=seed, dtype=dtype)
    key = jax.random.fold_in(jax.random.key(seed), 2)
    C = len(classes)
    model = eqx.nn.MLP(64, C, width, depth, activation=activation, key=key)
    name = f"digits-mlp-{'-'.join([str(width)] * depth)}-{loss}"
    return _classification_problem(model, x, y, loss=loss, n_classes=C, name=name, dtype=dtype)


class _Conv3x3(eqx.Module):
    """A 3×3 convolution with zero padding 1, as one matmul over shifted copies (im2col).

    On CPU this was 1.6× faster than XLA's convolution for these tiny images and channel
    counts (a gradient at 512 images, 8 channels: 10.4 against 16.9 ms).
    """

    weight: Array  # (c_out, c_in, 3, 3)
    bias: Array  # (c_out,)

    def __init__(self, c_in: int, c_out: int, *, key):
        bound = 1 / jnp.sqrt(9 * c_in)
        kw, kb = jax.random.split(key)
        self.weight = jax.random.uniform(kw, (c_out, c_in, 3, 3), minval=-bound, maxval=bound)
        self.bias = jax.random.uniform(kb, (c_out,), minval=-bound, maxval=bound)

    def __call__(self, x: Array) -> Array:  # (c_in, B, H, W) -> (c_out, B, H, W)
        c_in, B, H, W = x.shape
        xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        shifted = [xp[:, :, i : i + H, j : j + W] for i in range(3) for j in range(3)]
        patches = jnp.stack(shifted, axis=1).reshape(c_in * 9, -1)  # (c_in·9, B·H·W)
        w = self.weight.reshape(self.weight.shape[0], -1)  # (c_out, c_in·9)
        return (w @ patches + self.bias[:, None]).reshape(-1, B, H, W)  # one matmul


class _CNN(eqx.Module):
    conv1: _Conv3x3
    conv2: _Conv3x3
    head: eqx.nn.Linear
    activation: Callable = eqx.field(static=True)

    def __call__(self, images: Array) -> Array:  # a batch (B, 64) -> logits (B, C)
        B = images.shape[0]
        # Channels first, then the batch: each convolution is one matmul, no transposes.
        h = self.activation(self.conv1(images.reshape(1, B, 8, 8)))  # (c, B, 8, 8)
        h = self.activation(self.conv2(h))  # (c, B, 8, 8)
        h = h.reshape(-1, B, 4, 2, 4, 2).mean((3, 5))  # 2×2 average pooling: (c, B, 4, 4)
        return jax.vmap(self.head)(h.transpose(1, 0, 2, 3).reshape(B, -1))


def digits_cnn(
    n: int = 256,
    channels: int = 4,
    *,
    classes: tuple[int, ...] = tuple(range(10)),
    loss: str = "mse",
    activation=jax.nn.swish,
    seed: int = 0,
    dtype=jnp.float32,
) -> Problem:
    """A small CNN on the 8×8 digits: two 3×3 convolutions, 2×2 average pooling, a linear
    head (838 parameters with 4 channels), MSE on one-hot labels or cross-entropy."""
    x, y = digits(n, classes, seed=seed, dtype=dtype)
    k1, k2, k3 = jax.random.split(jax.random.fold_in(jax.random.key(seed), 3), 3)
    C = len(classes)
    model = _CNN(
        _Conv3x3(1, channels, key=k1),
        _Conv3x3(channels, channels, key=k2),
        eqx.nn.Linear(channels * 16, C, key=k3),
        activation,
    )
    name = f"digits-cnn-{channels}-{loss}"
    return _classification_problem(
        model, x, y, loss=loss, n_classes=C, name=name, dtype=dtype, batched=True
    )


class _Attention(eqx.Module):
    """Multi-head self-attention over a sequence (L, d), without masking or dropout."""

    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    heads: int = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:  # (L, d) -> (L, d)
        L, d = x.shape
        q, k, v = jnp.split(jax.vmap(self.qkv)(x), 3, axis=-1)  # each (L, d)
        q, k, v = (a.reshape(L, self.heads, -1).transpose(1, 0, 2) for a in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / jnp.sqrt(q.shape[-1]).astype(x.dtype)  # (h, L, L)
        h = jax.nn.softmax(scores, axis=-1) @ v  # (h, L, d/h)
        return jax.vmap(self.out)(h.transpose(1, 0, 2).reshape(L, d))


class _Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attention: _Attention
    norm2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __call__(self, x):  # (L, d)
        x = x + self.attention(jax.vmap(self.norm1)(x))
        return x + jax.vmap(self.mlp)(jax.vmap(self.norm2)(x))


class _Transformer(eqx.Module):
    embed: Array  # (vocab, d)
    position: Array  # (L, d)
    blocks: list
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __call__(self, tokens: Array) -> Array:  # (L,) int -> (L, vocab) logits
        x = self.embed[tokens] + self.position
        for block in self.blocks:
            x = block(x)
        return jax.vmap(self.head)(jax.vmap(self.norm)(x))


def sorting_transformer(
    n: int = 256,
    length: int = 6,
    vocab: int = 8,
    *,
    d_model: int = 16,
    heads: int = 2,
    layers: int = 1,
    loss: str = "ce",
    seed: int = 0,
    dtype=jnp.float32,
) -> Problem:
    """A pre-norm Transformer encoder that outputs the sorted sequence, position by position.

    Data: `sorting_task(n, length, vocab)`. Loss: cross-entropy ("ce") or MSE on one-hot
    targets, averaged over positions and sequences. The default has 2,616 parameters.
    """
    if d_model % heads:
        raise ValueError(
            f"sorting_transformer: d_model ({d_model}) must be a multiple of heads ({heads})."
        )
    tokens, targets = sorting_task(n, length, vocab, seed=seed)
    keys = iter(jax.random.split(jax.random.fold_in(jax.random.key(seed), 4), 4 + 3 * layers))
    init = lambda shape: 0.5 * jax.random.normal(next(keys), shape)
    blocks = [
        _Block(
            eqx.nn.LayerNorm(d_model),
            _Attention(
                eqx.nn.Linear(d_model, 3 * d_model, key=next(keys)),
                eqx.nn.Linear(d_model, d_model, key=next(keys)),
                heads,
            ),
            eqx.nn.LayerNorm(d_model),
            eqx.nn.MLP(d_model, d_model, 2 * d_model, 1, activation=jax.nn.gelu, key=next(keys)),
        )
        for _ in range(layers)
    ]
    model = _Transformer(
        init((vocab, d_model)),
        init((length, d_model)),
        blocks,
        eqx.nn.LayerNorm(d_model),
        eqx.nn.Linear(d_model, vocab, key=next(keys)),
    )
    name = f"sort-transformer-L{length}-V{vocab}-d{d_model}-{loss}"
    return _classification_problem(
        model, tokens, targets, loss=loss, n_classes=vocab, name=name, dtype=dtype
    )
