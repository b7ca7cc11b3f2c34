"""Built-in problems: toys with known EOS behaviour and small networks on offline data."""

from ._data import cifar10 as cifar10, digits as digits, sorting_task as sorting_task
from ._networks import (
    digits_cnn as digits_cnn,
    digits_mlp as digits_mlp,
    gaussian_regression as gaussian_regression,
    mlp_regression as mlp_regression,
    sorting_transformer as sorting_transformer,
)
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
    "digits-mlp": (digits_mlp, 0.6),
    "digits-cnn": (digits_cnn, 0.25),
    "sort-transformer": (sorting_transformer, 0.1),
}
