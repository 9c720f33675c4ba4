"""Exact Hessians (autograd) stay on the CPU: device arrays are refused with a TypeError."""

import numpy as np
import pytest

from kfqn_ref import backend, nn
from kfqn_ref.curvature import hessian
from tests.backends import strict

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 2))
T = RNG.standard_normal((3, 2))
ROUTINES = [
    (hessian.full_hessian, ()),
    (hessian.full_ggn, ()),
    (hessian.layer_hessian, (0,)),
    (hessian.layer_ggn, (0,)),
    (hessian.preactivation_hessians, (0,)),
    (hessian.preactivation_ggns, (0,)),
]


def _model():
    return nn.Sequential([nn.Dense(2, 2), nn.Tanh(), nn.Dense(2, 2)], nn.SquaredError(), seed=0)


def _rows():
    """(model, X, T, the argument the message names): one device argument at a time."""
    device_weights = _model()
    device_weights.set_weights([strict.asarray(w) for w in device_weights.weights()])
    return {
        "X": (_model(), strict.asarray(X), T, "X"),
        "T": (_model(), X, strict.asarray(T), "T"),
        "weights": (device_weights, X, T, r"model.weights\(\)\[0\]"),
    }


ROWS = _rows()


@pytest.mark.parametrize(("routine", "extra"), ROUTINES, ids=[r[0].__name__ for r in ROUTINES])
@pytest.mark.parametrize("which", sorted(ROWS))
def test_a_device_array_is_refused_naming_it_and_changes_nothing(routine, extra, which):
    model, X_in, T_in, name = ROWS[which]
    before = [backend.to_host(w).copy() for w in model.weights()]
    pattern = (
        rf"^{name} must be a host \(NumPy\) array: {routine.__name__} differentiates with "
        r"autograd, which runs on the CPU only; got a strictnp array"
    )
    with pytest.raises(TypeError, match=pattern):
        routine(model, X_in, T_in, *extra)
    for weight, kept in zip(model.weights(), before, strict=True):
        np.testing.assert_array_equal(backend.to_host(weight), kept, strict=True)
