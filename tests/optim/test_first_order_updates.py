"""The first-order update helpers, which accumulate in place in the arrays they create.

Slow twins: each helper equals, bit for bit, the written-out expression it replaces (the same
products and sums in the same order, so rounding is identical), in float64 and float32, and leaves
its arguments (previous state, gradients, weights) unchanged: states are values.
"""

import numpy as np
import pytest

from kfqn_ref import optim
from kfqn_ref.optim.first_order import (
    _adam_direction,
    _moving_average,
    _rmsprop_buffer,
    apply_steps,
    momentum_update,
    regularised_gradients,
)
from tests.optim import autoencoder, digits_4x4

DTYPES = [np.float64, np.float32]


def _arrays(dtype, count, shape=(7, 5), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


def _assert_bits(actual, expected):
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(np.signbit(actual), np.signbit(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_moment_updates_equal_the_written_out_expressions(dtype):
    average, d = _arrays(dtype, 2)
    kept = [average.copy(), d.copy()]
    beta = 0.9
    _assert_bits(_moving_average(average, d, beta), beta * average + (1.0 - beta) * d)
    _assert_bits(
        _moving_average(average, d, beta, square=True), beta * average + (1.0 - beta) * d * d
    )
    for form in optim.MomentumForm:
        c = 1.0 if form is optim.MomentumForm.HEAVY_BALL else 1.0 - beta
        _assert_bits(momentum_update(average, d, beta, form), beta * average + c * d)
    for argument, before in zip((average, d), kept, strict=True):
        _assert_bits(argument, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_and_rmsprop_directions_equal_the_written_out_expressions(dtype):
    m, d, b = _arrays(dtype, 3)
    v = np.abs(_arrays(dtype, 1, seed=1)[0])
    kept = [a.copy() for a in (m, v, d, b)]
    adam = optim.AdamConfig(beta1=0.8, beta2=0.95, eps=1e-6)
    t = 3
    m_hat, v_hat = m / (1.0 - adam.beta1**t), v / (1.0 - adam.beta2**t)
    _assert_bits(_adam_direction(m, v, adam, t), m_hat / (np.sqrt(v_hat) + adam.eps))
    rmsprop = optim.RMSpropConfig(eps=1e-6, momentum=0.5)
    _assert_bits(
        _rmsprop_buffer(b, d, v, rmsprop),
        rmsprop.momentum * b + d / (np.sqrt(v) + rmsprop.eps),
    )
    for argument, before in zip((m, v, d, b), kept, strict=True):
        _assert_bits(argument, before)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_regularised_gradients_and_apply_steps_equal_the_written_out_expressions(weight_decay):
    # d = grad f + tau W~ (d is the gradient itself for tau = 0); new weights W~ - lr p.
    model = autoencoder()
    X, T = digits_4x4(8)
    result = model.forward_backward(X, T)
    before = model.weights()
    loss, weights, regularised = regularised_gradients(model, X, T, weight_decay)
    assert loss == result.loss
    for d, grad, w, w_model in zip(regularised, result.grads, weights, before, strict=True):
        expected = grad + weight_decay * w if weight_decay else grad
        _assert_bits(d, expected)
        _assert_bits(w, w_model)
    rng = np.random.default_rng(2)
    steps = [rng.standard_normal(w.shape) for w in weights]
    kept = [s.copy() for s in steps]
    apply_steps(model, weights, steps, 0.3)
    for new, w, w_model, s, s_before in zip(
        model.weights(), weights, before, steps, kept, strict=True
    ):
        _assert_bits(new, w - 0.3 * s)
        _assert_bits(w, w_model)
        _assert_bits(s, s_before)


@pytest.mark.parametrize(
    "build",
    [
        lambda model: optim.Adam(model, lr=0.01, weight_decay=1e-3),
        lambda model: optim.RMSprop(model, lr=0.01, momentum=0.5, weight_decay=1e-3),
        lambda model: optim.SGDMomentum(model, lr=0.1, weight_decay=1e-3),
        lambda model: optim.SGDMomentum(model, lr=0.1, nesterov=True),
    ],
    ids=["Adam", "RMSprop", "SGDMomentum", "SGDMomentum-nesterov"],
)
def test_an_accepted_step_leaves_the_previous_state_arrays_unchanged(build):
    opt = build(autoencoder())
    X, T = digits_4x4(16)
    opt.step(X, T)
    previous = opt.state
    kept = [np.array(a, copy=True) for field in previous for a in field]
    opt.step(X, T)
    assert opt.state is not previous
    for array, before in zip([a for field in previous for a in field], kept, strict=True):
        _assert_bits(array, before)
