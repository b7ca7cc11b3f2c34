"""Offline datasets: scikit-learn's bundled digits, a synthetic sorting task, CIFAR-10 from
files the user already has. Nothing here downloads."""

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


def digits(
    n: int | None = None,
    classes: Sequence[int] = tuple(range(10)),
    *,
    normalize: str = "standardize",
    seed: int = 0,
    dtype=jnp.float32,
) -> tuple[Float[Array, "n 64"], Int[Array, " n"]]:
    """scikit-learn's bundled 8×8 digits: images (n, 64) and labels 0..len(classes)−1.

    `classes` picks the digits kept (relabelled in the order given); `n` takes a seeded
    random subset (all if None). `normalize`: "standardize" (each pixel to mean 0 and
    variance 1 over the subset; constant pixels stay 0), "unit" (pixels / 16), or "none".
    """
    from sklearn.datasets import load_digits

    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(range(10)):
        raise ValueError(f"digits: classes must be distinct digits 0-9, got {classes}.")
    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    x, y = x[keep].astype(np.float64), y[keep]
    if n is not None:
        if not (isinstance(n, int | np.integer) and 0 < n <= len(y)):
            raise ValueError(f"digits: n must be in 1..{len(y)} for classes {classes}, got {n}.")
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
        x, y = x[idx], y[idx]
    if normalize == "standardize":
        std = x.std(0)
        x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    elif normalize == "unit":
        x = x / 16.0
    elif normalize != "none":
        raise ValueError(
            f"digits: normalize must be 'standardize', 'unit' or 'none', got {normalize!r}."
        )
    return jnp.asarray(x, dtype), jnp.asarray(_relabel(y, classes), jnp.int32)


def digits_images(
    n: int = 1000,
    classes: Sequence[int] = (0, 1, 2, 3),
    *,
    size: int = 32,
    seed: int = 0,
    dtype=jnp.float32,
) -> tuple[Float[Array, "n 3 size size"], Int[Array, " n"]]:
    """An offline stand-in for a CIFAR-10 subset: real images of the CIFAR-10 shape.

    scikit-learn's bundled 8×8 digits of `classes`, upsampled bilinearly to size×size,
    copied into 3 channels and standardised per channel as `cifar10` does. Where `n` is
    more than the digits there are (720 for 0-3), the rest are copies shifted by up to
    size/8 pixels, seeded, so that every image is a real digit.
    """
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"digits_images: n must be a positive integer, got {n!r}.")
    if not (isinstance(size, int | np.integer) and size >= 8):
        raise ValueError(f"digits_images: size must be an integer of at least 8, got {size!r}.")
    x, y = digits(None, classes, normalize="unit")
    x, y = np.asarray(x, np.float64).reshape(-1, 8, 8), np.asarray(y)
    rng = np.random.default_rng(seed)
    if n <= len(y):
        idx = np.sort(rng.choice(len(y), size=n, replace=False))
        x, y = x[idx], y[idx]
    up = np.asarray(jax.image.resize(x.astype(np.float32), (len(x), size, size), "bilinear"))
    up = up.astype(np.float64)
    if n > len(y):
        extra = rng.choice(len(y), size=n - len(y))
        shift = size // 8
        moves = rng.integers(-shift, shift + 1, size=(n - len(y), 2))
        copies = [np.roll(up[i], tuple(m), axis=(0, 1)) for i, m in zip(extra, moves, strict=True)]
        up, y = np.concatenate([up, np.stack(copies)]), np.concatenate([y, y[extra]])
    x = np.repeat(up[:, None], 3, axis=1)  # (n, 3, size, size)
    x = (x - x.mean((0, 2, 3), keepdims=True)) / x.std((0, 2, 3), keepdims=True)
    return jnp.asarray(x, dtype), jnp.asarray(y, jnp.int32)


def sorting_task(
    n: int = 256, length: int = 6, vocab: int = 8, *, seed: int = 0
) -> tuple[Int[Array, "n length"], Int[Array, "n length"]]:
    """Random token sequences (n, length) over `vocab` symbols and their sorted versions."""
    for name, v in (("n", n), ("length", length), ("vocab", vocab)):
        if not (isinstance(v, int | np.integer) and v >= 1):
            raise ValueError(f"sorting_task: {name} must be a positive integer, got {v!r}.")
    tokens = jax.random.randint(jax.random.key(seed), (n, length), 0, vocab, dtype=jnp.int32)
    return tokens, jnp.sort(tokens, axis=1)


def cifar10(
    path: str | os.PathLike,
    n: int | None = None,
    classes: Sequence[int] = tuple(range(10)),
    *,
    seed: int = 0,
    dtype=jnp.float32,
) -> tuple[Float[Array, "n 3 32 32"], Int[Array, " n"]]:
    """CIFAR-10 training images (n, 3, 32, 32), standardised per channel, and labels.

    Reads the "python version" batches (`data_batch_1` … `data_batch_5`) from `path`, the
    folder `cifar-10-batches-py` the user already has; flowode never downloads it.
    """
    folder = Path(path)
    files = sorted(folder.glob("data_batch_*"))
    if not files:
        raise FileNotFoundError(
            f"cifar10: no CIFAR-10 batches (data_batch_1 ... data_batch_5) in {folder}. "
            "flowode does not download data: pass the path of an existing "
            "'cifar-10-batches-py' folder, or use problems.digits (offline)."
        )
    xs, ys = [], []
    for file in files:
        with open(file, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], np.float64).reshape(-1, 3, 32, 32) / 255.0)
        ys.append(np.asarray(batch[b"labels"]))
    x, y = np.concatenate(xs), np.concatenate(ys)
    classes = [int(c) for c in classes]
    keep = np.isin(y, classes)
    x, y = x[keep], y[keep]
    if n is not None:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
        x, y = x[idx], y[idx]
    x = (x - x.mean((0, 2, 3), keepdims=True)) / x.std((0, 2, 3), keepdims=True)
    return jnp.asarray(x, dtype), jnp.asarray(_relabel(y, classes), jnp.int32)


def _relabel(y: np.ndarray, classes: list[int]) -> np.ndarray:
    """Labels as positions in `classes`: 0..len(classes)−1."""
    lookup = np.zeros(max(classes) + 1, np.int64)
    lookup[classes] = np.arange(len(classes))
    return lookup[y]
