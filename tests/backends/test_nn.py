"""Layers and losses give the NumPy results bit for bit on the strict backend."""

import numpy as np
import pytest

from kfqn_ref import nn

RNG = np.random.default_rng(0)
X_DENSE = RNG.standard_normal((5, 4))
X_IMAGE = RNG.standard_normal((2, 2, 5, 5))


def _forward_backward(layer, weight, x, dy):
    """``(y, dx, g, grad)`` of one affine layer."""
    y, cache = layer.forward(weight, x)
    result = layer.backward(weight, cache, dy)
    return y, result.input_gradient, result.g, result.grad


@pytest.mark.parametrize(
    ("layer", "x"),
    [(nn.Dense(4, 3), X_DENSE), (nn.Conv2d(2, 3, 3, stride=1, padding=1), X_IMAGE)],
    ids=["Dense", "Conv2d"],
)
def test_affine_layer_forward_backward_equals_numpy(on, layer, x):
    weight = layer.init_weight(np.random.default_rng(1), np.float64)
    y = layer.forward(weight, x)[0]
    dy = np.random.default_rng(2).standard_normal(y.shape)
    expected = _forward_backward(layer, weight, x, dy)
    got = on.host(_forward_backward(layer, on.array(weight), on.array(x), on.array(dy)))
    for name, a, b in zip(("y", "dx", "g", "grad"), got, expected, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize(
    "layer",
    [nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.Softplus(), nn.Identity(), nn.Flatten()],
    ids=lambda layer: type(layer).__name__,
)
def test_parameter_free_layer_forward_backward_equals_numpy(on, layer):
    dy = np.random.default_rng(3).standard_normal(X_DENSE.shape)
    y, cache = layer.forward(X_DENSE)
    expected = (y, layer.backward(cache, dy))
    y_on, cache_on = layer.forward(on.array(X_DENSE))
    got = on.host((y_on, layer.backward(cache_on, on.array(dy))))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def _targets(loss):
    rng = np.random.default_rng(4)
    if isinstance(loss, nn.SoftmaxCrossEntropy):
        return np.eye(3)[rng.integers(0, 3, size=5)]
    if isinstance(loss, nn.SigmoidCrossEntropy):
        return rng.uniform(size=(5, 3))
    return rng.standard_normal((5, 3))


@pytest.mark.parametrize(
    "loss",
    [nn.SquaredError(), nn.SigmoidCrossEntropy(), nn.SoftmaxCrossEntropy()],
    ids=lambda loss: type(loss).__name__,
)
def test_loss_value_gradient_hessian_equal_numpy(on, loss):
    z = np.random.default_rng(5).standard_normal((5, 3))
    t = _targets(loss)

    def evaluate(z, t):
        return (
            loss.value(z, t),
            loss.output_gradient(z, t),
            loss.output_hessian(z, t),
            loss.output_hessian_sqrt(z, t),
        )

    expected = evaluate(z, t)
    got = on.host(evaluate(on.array(z), on.array(t)))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
