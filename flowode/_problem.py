"""A loss and a starting point: what every process is run on."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

# Dtypes the processes run in: eigenvalues and the SDCP need at least float32.
SUPPORTED_DTYPES = (jnp.float32, jnp.float64)


class FlatLoss(eqx.Module):
    """`loss(unravel(w), data)` for a flat parameter vector w: the loss every process sees.

    It is an Equinox module whose non-array fields (the user's loss function, the pytree
    structure of w0, its non-array leaves) are static and whose arrays (integer buffers)
    are traced. Compiled programs are therefore keyed, as `eqx.filter_jit` keys them, on
    the loss function's identity and the parameters' structure: two problems built from
    the same loss function with new weights or new data of the same shapes share them.
    """

    loss: Callable[..., Any]
    treedef: Any  # jax PyTreeDef of w0
    layout: tuple  # per leaf: ("param", shape, dtype) | ("buffer", index) | ("static", value)
    buffers: tuple[Array, ...]  # non-float array leaves of w0, held fixed
    has_data: bool

    def unravel(self, w: Float[Array, " n"]) -> PyTree:
        leaves, start = [], 0
        for entry in self.layout:
            if entry[0] == "param":
                _, shape, dtype = entry
                size = int(np.prod(shape, dtype=int))
                leaves.append(w[start : start + size].reshape(shape).astype(dtype))
                start += size
            elif entry[0] == "buffer":
                leaves.append(self.buffers[entry[1]])
            else:
                leaves.append(entry[1])
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def __call__(self, w: Float[Array, " n"], data: PyTree) -> Array:
        params = self.unravel(w)
        return self.loss(params, data) if self.has_data else self.loss(params)


def _flatten(loss, w0, has_data, name) -> tuple[FlatLoss, Array]:
    leaves, treedef = jax.tree_util.tree_flatten(w0)
    layout, buffers, params = [], [], []
    for leaf in leaves:
        if eqx.is_inexact_array_like(leaf):
            leaf = jnp.asarray(leaf)
            if leaf.size == 0:
                layout.append(("buffer", len(buffers)))
                buffers.append(leaf)
                continue
            layout.append(("param", tuple(leaf.shape), jnp.dtype(leaf.dtype).name))
            params.append(leaf)
        elif eqx.is_array(leaf):
            layout.append(("buffer", len(buffers)))
            buffers.append(leaf)
        else:
            layout.append(("static", leaf))
    if not params:
        raise ValueError(
            f"Problem {name!r}: w0 has no floating-point leaves, so there is nothing to "
            "optimise. Give parameters as float arrays."
        )
    dtype = jnp.result_type(*params)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"Problem {name!r}: parameters must be real floats, got {dtype}.")
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Problem {name!r}: w0 is {jnp.dtype(dtype).name}; flowode runs in float32 or "
            "float64 (eigenvalues and the SDCP need at least float32). Cast w0 and the "
            "data, e.g. with jax.tree.map(lambda x: x.astype(jnp.float32), w0)."
        )
    flat = jnp.concatenate([jnp.ravel(p).astype(dtype) for p in params])
    f = FlatLoss(loss, treedef, tuple(layout), tuple(buffers), has_data)
    return f, flat


class Problem:
    """A scalar loss `loss(params)` (or `loss(params, data)`) and its start `w0`.

    `w0` is any pytree: a dict of arrays, an Equinox model or a flat vector. Its
    floating-point leaves are the parameters; everything else (activation
    functions, integer buffers) is held fixed. The parameters are flattened once,
    in `ravel_pytree` order, and keep the dtype of `w0` (float32 or float64). `data` is
    passed to the loss as a traced argument, so new data of the same shapes does not
    recompile; neither does a new w0 with the same structure and the same `loss` function.
    """

    flat_w0: Float[Array, " n"]
    flat_loss: FlatLoss

    def __init__(
        self, loss: Callable[..., Any], w0: PyTree, name: str = "problem", data: PyTree = None
    ):
        self.loss, self.w0, self.name, self.data = loss, w0, str(name), data
        if not callable(self.loss):
            raise TypeError(f"Problem.loss must be callable, got {type(self.loss).__name__}.")
        self.flat_loss, self.flat_w0 = _flatten(loss, w0, data is not None, self.name)
        self._check_loss()

    def unravel(self, w: Float[Array, " n"]) -> PyTree:
        """The parameter pytree of a flat vector (the inverse of the flattening of w0)."""
        return self.flat_loss.unravel(w)

    def _check_loss(self):
        try:
            out = jax.eval_shape(self.flat_loss, self.flat_w0, self.data)
        except Exception as e:  # the user's loss failed to trace: say where
            raise ValueError(f"Problem {self.name!r}: calling the loss at w0 failed: {e}") from e
        if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(
                f"Problem {self.name!r}: the loss must return a scalar, got shape {shape}."
            )
        value = float(self.flat_loss(self.flat_w0, self.data))
        if not np.isfinite(value):
            raise ValueError(
                f"Problem {self.name!r}: the loss at w0 is not finite ({value}); check the "
                "data and w0 for NaN or inf values."
            )

    def __repr__(self):
        return f"Problem(name={self.name!r}, n_params={self.n_params}, dtype={self.dtype})"

    @property
    def n_params(self) -> int:
        return int(self.flat_w0.size)

    @property
    def dtype(self):
        return self.flat_w0.dtype
