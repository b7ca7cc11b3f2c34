"""Built-in problems: toys with known EOS behaviour and small networks on offline data."""

from ._networks import gaussian_regression as gaussian_regression
from ._networks import mlp_regression as mlp_regression
from ._toys import (
    factorisation as factorisation,
)
from ._toys import (
    quadratic as quadratic,
)
from ._toys import (
    softening_quartic as softening_quartic,
)

# name -> (constructor, a learning rate at which it shows the edge of stability)
PROBLEMS = {
    "quadratic": (quadratic, 0.1),
    "quartic": (softening_quartic, 1.0),
    "factorisation": (factorisation, 0.25),
    "mlp": (mlp_regression, 0.1),
}
