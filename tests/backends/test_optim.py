"""A few K-BFGS, K-BFGS(L) and Adam steps on a tiny MLP: the same weights on the strict backend."""

import numpy as np
import pytest

from kfqn_ref import nn
from kfqn_ref.optim import KBFGS, KBFGSL, Adam
from tests.backends.conftest import assert_same, numpy_reference

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 5))
T = np.eye(3)[RNG.integers(0, 3, size=8)]
STEPS = 4


def _train(make_optimizer, X, T):
    """``(losses, weights)`` after :data:`STEPS` steps from the seed-0 weights."""
    model = nn.Sequential(
        [nn.Dense(5, 4), nn.Tanh(), nn.Dense(4, 3)], loss=nn.SoftmaxCrossEntropy(), seed=0
    )
    optimizer = make_optimizer(model)
    losses = tuple(optimizer.step(X, T) for _ in range(STEPS))
    return losses, tuple(model.weights())


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda model: KBFGS(model, lr=0.1, damping=0.3),
        lambda model: KBFGSL(model, lr=0.1, damping=0.3),
        lambda model: Adam(model, lr=0.01),
    ],
    ids=["KBFGS", "KBFGSL", "Adam"],
)
def test_steps_give_the_numpy_losses_and_weights(on, make_optimizer):
    expected = numpy_reference(_train, make_optimizer, X, T)
    losses, weights = _train(make_optimizer, on.array(X), on.array(T))
    assert all(type(loss) is float for loss in losses)
    assert_same((losses, on.host(weights)), expected)
