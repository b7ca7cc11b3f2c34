"""A loss and a starting point: what every process is run on."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree


class Problem:
    """A scalar loss `loss(params)` (or `loss(params, data)`) and its start `w0`.

    `w0` is any pytree: a dict of arrays, an Equinox model or a flat vector. Its
    floating-point leaves are the parameters; everything else (activation
    functions, integer buffers) is held fixed. The parameters are flattened once,
    in `ravel_pytree` order, and keep the dtype of `w0`. `data` is passed to the
    loss as a traced argument, so new data of the same shape does not recompile.
    """

    flat_w0: Float[Array, " n"]
    flat_loss: Callable[[Array, PyTree], Array]
    unravel: Callable[[Array], PyTree]

    def __init__(
        self, loss: Callable[..., Any], w0: PyTree, name: str = "problem", data: PyTree = None
    ):
        self.loss, self.w0, self.name, self.data = loss, w0, str(name), data
        if not callable(self.loss):
            raise TypeError(f"Problem.loss must be callable, got {type(self.loss).__name__}.")
        params, static = eqx.partition(self.w0, eqx.is_inexact_array_like)
        leaves = [x for x in jax.tree_util.tree_leaves(params) if jnp.size(x) > 0]
        if not leaves:
            raise ValueError(
                f"Problem {self.name!r}: w0 has no floating-point leaves, so there is "
                "nothing to optimise. Give parameters as float arrays."
            )
        params = jax.tree_util.tree_map(jnp.asarray, params)
        flat, unravel_params = ravel_pytree(params)
        if not jnp.issubdtype(flat.dtype, jnp.floating):
            raise ValueError(f"Problem {self.name!r}: parameters must be real floats.")
        user_loss, has_data = self.loss, self.data is not None

        def unravel(w):
            return eqx.combine(unravel_params(w), static)

        def flat_loss(w, data):
            p = unravel(w)
            return user_loss(p, data) if has_data else user_loss(p)

        self.flat_w0 = flat
        self.unravel = unravel
        self.flat_loss = flat_loss
        self._check_loss()

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
            raise ValueError(f"Problem {self.name!r}: the loss at w0 is not finite ({value}).")

    def __repr__(self):
        return f"Problem(name={self.name!r}, n_params={self.n_params}, dtype={self.dtype})"

    @property
    def n_params(self) -> int:
        return int(self.flat_w0.size)

    @property
    def dtype(self):
        return self.flat_w0.dtype
