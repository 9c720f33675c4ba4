"""A few optimizer steps on tiny nets: the same losses and weights on the strict backend."""

import numpy as np
import pytest

from kfqn_ref import nn
from kfqn_ref.optim import KBFGS, KBFGSL, KFAC, Adam, RMSprop, SGDMomentum, Shampoo
from tests.backends.conftest import assert_same, numpy_reference

RNG = np.random.default_rng(0)
STEPS = 4


def mlp():
    layers = [nn.Dense(5, 4), nn.Tanh(), nn.Dense(4, 3)]
    return nn.Sequential(layers, loss=nn.SoftmaxCrossEntropy(), seed=0)


def cnn():
    layers = [nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    return nn.Sequential(layers + [nn.Dense(8, 3)], loss=nn.SoftmaxCrossEntropy(), seed=0)


#: net -> (X, T): one-hot targets for the MLP, class indices for the CNN.
BATCHES = {
    mlp: (RNG.standard_normal((8, 5)), np.eye(3)[RNG.integers(0, 3, size=8)]),
    cnn: (RNG.standard_normal((4, 1, 4, 4)), RNG.integers(0, 3, size=4)),
}
CASES = [
    ("KBFGS", mlp, lambda model: KBFGS(model, lr=0.1, damping=0.3)),
    ("KBFGSL", mlp, lambda model: KBFGSL(model, lr=0.1, damping=0.3)),
    ("Adam", mlp, lambda model: Adam(model, lr=0.01)),
    ("RMSprop", mlp, lambda model: RMSprop(model, lr=0.01)),
    ("SGDMomentum", mlp, lambda model: SGDMomentum(model, lr=0.1)),
    ("KBFGS-2020", mlp, lambda model: KBFGS(model, lr=0.1, damping=0.3, variant="2020")),
    (
        "KBFGSL-convergent",
        mlp,
        lambda model: KBFGSL(
            model, lr=0.1, damping=0.3, variant="convergent", memory_light=True, momentum=0
        ),
    ),
    ("KBFGS-cnn", cnn, lambda model: KBFGS(model, lr=0.1, damping=0.3)),
    ("KBFGSL-cnn", cnn, lambda model: KBFGSL(model, lr=0.1, damping=0.3)),
    ("KFAC", mlp, lambda model: KFAC(model, lr=0.1, damping=0.3, inverse_interval=1)),
    (
        "KFAC-type2-reduce-cnn",
        cnn,
        lambda model: KFAC(model, lr=0.1, damping=0.3, fisher="type2", conv_approximation="reduce"),
    ),
    ("Shampoo-cnn", cnn, lambda model: Shampoo(model, lr=0.1)),
]


def _train(net, make_optimizer, X, T):
    """``(losses, weights)`` after :data:`STEPS` steps from the seed-0 weights of ``net``."""
    model = net()
    optimizer = make_optimizer(model)
    losses = tuple(optimizer.step(X, T) for _ in range(STEPS))
    return losses, tuple(model.weights())


@pytest.mark.parametrize(
    ("net", "make_optimizer"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_steps_give_the_numpy_losses_and_weights(on, net, make_optimizer):
    X, T = BATCHES[net]
    expected = numpy_reference(_train, net, make_optimizer, X, T)
    losses, weights = _train(net, make_optimizer, on.array(X), on.array(T))
    assert all(type(loss) is float for loss in losses)
    assert_same((losses, on.host(weights)), expected)


def test_the_state_dict_of_a_strict_run_is_the_numpy_one(on):
    def state(X, T):
        optimizer = KBFGSL(mlp(), lr=0.1, damping=0.3)
        optimizer.step(X, T)
        return optimizer.state_dict()

    X, T = BATCHES[mlp]
    expected = numpy_reference(state, X, T)
    got = state(on.array(X), on.array(T))
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert type(got[key]) is np.ndarray, key
        np.testing.assert_array_equal(got[key], value, err_msg=key, strict=True)


def test_train_run_moves_minibatches_to_the_backend_and_matches_numpy(on):
    """``train.run`` (the loop of ``kfqn-ref train``/``compare``) on the strict backend: the
    minibatches and evaluation chunks go to the device explicitly (``backend.to_device``), and the
    log and weights equal the NumPy run bit for bit."""
    from kfqn_ref import data, train

    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, 5))
    dataset = data.Dataset("tiny", X, rng.integers(0, 3, size=12))

    def run():
        model = mlp()
        log = train.run(KBFGS(model, lr=0.1, damping=0.3), dataset, batch_size=4, epochs=2)
        return (tuple(log.step_losses), tuple(log.epoch_losses)), tuple(model.weights())

    expected_log, expected_weights = numpy_reference(run)
    got_log, got_weights = run()
    got_weights = on.host(got_weights)
    assert_same(got_log, expected_log)
    assert_same(got_weights, expected_weights)
