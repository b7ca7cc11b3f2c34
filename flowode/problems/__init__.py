"""Built-in problems: toys with known EOS behaviour and small networks on offline data."""

from ._data import (
    cifar10 as cifar10,
    digits as digits,
    digits_images as digits_images,
    sorting_task as sorting_task,
)
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

# name -> (constructor, a learning rate at which it shows the edge of stability, the first
# step at which GD's ηS at its iterates reaches 1.9 there: `simulate(eigs_at="iterate")`).
PROBLEMS = {
    "quadratic": (quadratic, 0.1, None),  # constant sharpness 10: ηS = 1 at η = 0.1
    "quartic": (softening_quartic, 1.0, 10),
    "factorisation": (factorisation, 0.25, 0),
    "mlp": (mlp_regression, 0.1, 460),
    "digits-mlp": (digits_mlp, 0.6, 350),
    "digits-cnn": (digits_cnn, 0.25, 140),
    "sort-transformer": (sorting_transformer, 0.1, 150),
}
