"""Built-in problems: toys with known EOS behaviour and small networks on offline data."""

from ._networks import gaussian_regression as gaussian_regression, mlp_regression as mlp_regression
from ._toys import (
    factorisation as factorisation,
    quadratic as quadratic,
    softening_quartic as softening_quartic,
)

# name -> (constructor, a learning rate at which it shows the edge of stability)
PROBLEMS = {
    "quadratic": (quadratic, 0.1),
    "quartic": (softening_quartic, 1.0),
    "factorisation": (factorisation, 0.25),
    "mlp": (mlp_regression, 0.1),
}
