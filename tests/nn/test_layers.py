"""Dot-product tests of every layer's backward (the idea of autograd's ``check_grads``).

For a layer ``y = f(x)`` with backward ``x_bar = J^T y_bar``: ``<v, J^T w> = <w, J v>`` for random
``v``, ``w`` (explicit seeds). For layers linear in the argument (Dense and Conv2d in ``x`` with
zero bias and in ``W~``; Flatten; AvgPool2d) ``J v`` is ``f(v)`` itself and the identity is exact:
1e-10 relative. For the others ``J v`` is a central difference
``(f(x + eps v / 2) - f(x - eps v / 2)) / eps`` with ``eps = 1e-6``, as in ``check_grads``: its
truncation error is ``O(eps^2)`` and its rounding error ``O(1e-16 / eps)``, both far below the
``1e-6`` relative tolerance used (autograd's own ``RTOL``).
"""

import numpy as np
import pytest
from helpers.compare import assert_close

from kfqn_ref import nn

#: Step and relative tolerance of the central-difference check (autograd.test_util's EPS, RTOL).
FD_EPS = 1e-6
FD_RTOL = 1e-6

NONLINEAR = [
    (nn.Identity(), (3, 7)),
    (nn.ReLU(), (3, 4, 5)),
    (nn.Sigmoid(), (3, 7)),
    (nn.Tanh(), (2, 3, 4, 4)),
    (nn.Softplus(), (3, 7)),
    (nn.MaxPool2d(2), (2, 3, 6, 6)),
    (nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 7, 6)),
    (nn.MaxPool2d((2, 3), stride=(1, 2)), (2, 2, 5, 7)),
]
LINEAR = [
    (nn.Flatten(), (3, 2, 4, 5)),
    (nn.AvgPool2d(2), (2, 3, 6, 6)),
    (nn.AvgPool2d(3, stride=2, padding=1), (2, 2, 7, 6)),
    (nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 7, 6)),
]
TRAINABLE = [
    (nn.Dense(6, 4), (5, 6)),
    (nn.Dense(6, 4, bias=False), (5, 6)),
    (nn.Conv2d(2, 3, 3), (2, 2, 6, 5)),
    (nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (2, 2, 6, 5)),
    (nn.Conv2d(3, 2, 2, stride=3, dilation=2, bias=False), (2, 3, 8, 8)),
]


def _ids(cases):
    return [repr(layer) for layer, _ in cases]


def _inner(u, v):
    return float(np.sum(u * v))


def _output_probe(layer, x, rng):
    y, _ = layer.forward(x)
    return rng.standard_normal(y.shape)


@pytest.mark.parametrize(("layer", "shape"), NONLINEAR, ids=_ids(NONLINEAR))
def test_backward_of_nonlinear_layer_passes_dot_product_test(layer, shape):
    rng = np.random.default_rng(0)
    x, v = rng.standard_normal(shape), rng.standard_normal(shape)
    w = _output_probe(layer, x, rng)
    _, cache = layer.forward(x)
    analytic = _inner(v, layer.backward(cache, w))
    plus, _ = layer.forward(x + 0.5 * FD_EPS * v)
    minus, _ = layer.forward(x - 0.5 * FD_EPS * v)
    numeric = _inner(w, (plus - minus) / FD_EPS)
    assert_close(analytic, numeric, rtol=FD_RTOL, what=f"<v, J^T w> of {layer!r}")


@pytest.mark.parametrize(("layer", "shape"), LINEAR, ids=_ids(LINEAR))
def test_backward_of_linear_layer_is_exact_adjoint(layer, shape):
    rng = np.random.default_rng(1)
    v = rng.standard_normal(shape)
    w = _output_probe(layer, v, rng)
    _, cache = layer.forward(v)
    jv, _ = layer.forward(v)
    assert_close(
        _inner(v, layer.backward(cache, w)), _inner(w, jv), what=f"<v, J^T w> of {layer!r}"
    )


@pytest.mark.parametrize(("layer", "shape"), TRAINABLE, ids=_ids(TRAINABLE))
def test_input_gradient_of_trainable_layer_is_exact_adjoint(layer, shape):
    # With the bias column zeroed, x -> h is linear: J v = forward(W0, v).
    rng = np.random.default_rng(2)
    weight = rng.standard_normal(layer.weight_shape)
    if layer.has_bias:
        weight[:, -1] = 0.0
    x, v = rng.standard_normal(shape), rng.standard_normal(shape)
    y, cache = layer.forward(weight, x)
    w = rng.standard_normal(y.shape)
    jv, _ = layer.forward(weight, v)
    back = layer.backward(weight, cache, w)
    assert_close(_inner(v, back.input_gradient), _inner(w, jv), what=f"<v, J_x^T w> of {layer!r}")


@pytest.mark.parametrize(("layer", "shape"), TRAINABLE, ids=_ids(TRAINABLE))
def test_weight_gradient_of_trainable_layer_is_exact_adjoint(layer, shape):
    # W~ -> h is linear: J V = forward(V, x); grad = J^T w / N.
    rng = np.random.default_rng(3)
    weight, direction = rng.standard_normal((2,) + layer.weight_shape)
    x = rng.standard_normal(shape)
    y, cache = layer.forward(weight, x)
    w = rng.standard_normal(y.shape)
    jv, _ = layer.forward(direction, x)
    back = layer.backward(weight, cache, w)
    n = shape[0]
    assert_close(n * _inner(direction, back.grad), _inner(w, jv), what=f"<V, J_W^T w> of {layer!r}")


@pytest.mark.parametrize(("layer", "shape"), TRAINABLE, ids=_ids(TRAINABLE))
def test_record_g_is_output_gradient_in_record_layout(layer, shape):
    # g is dy rearranged to h's layout: <g, h(V)> = <dy, y(V)> for any weight V.
    rng = np.random.default_rng(4)
    weight = rng.standard_normal(layer.weight_shape)
    x = rng.standard_normal(shape)
    y, cache = layer.forward(weight, x)
    dy = rng.standard_normal(y.shape)
    back = layer.backward(weight, cache, dy)
    assert back.g.shape == cache.h.shape
    assert_close(_inner(back.g, cache.h), _inner(dy, y), what=f"<g, h> of {layer!r}")


@pytest.mark.parametrize(("layer", "shape"), TRAINABLE, ids=_ids(TRAINABLE))
def test_backward_flags_skip_only_what_they_name(layer, shape):
    # Expected: the same g (bitwise) with every flag combination, None where a part is skipped.
    rng = np.random.default_rng(5)
    weight = rng.standard_normal(layer.weight_shape)
    y, cache = layer.forward(weight, rng.standard_normal(shape))
    dy = rng.standard_normal(y.shape)
    full = layer.backward(weight, cache, dy)
    bare = layer.backward(weight, cache, dy, input_gradient=False, weight_gradient=False)
    assert bare.input_gradient is None and bare.grad is None
    np.testing.assert_array_equal(bare.g, full.g)


# -- documented conventions at non-differentiable points (expected values by hand) -----------------


def test_max_pool_gives_a_tied_window_gradient_to_its_first_entry_in_row_major_order():
    # Window [[1, 3], [3, 2]]: the max 3 is attained at (0, 1) and (1, 0); (0, 1) comes first in
    # row-major order, so it alone receives dy = 5. An all-zero window: (0, 0) receives dy = 7.
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    y, cache = nn.MaxPool2d(2).forward(x)
    np.testing.assert_array_equal(y, [[[[3.0]]], [[[0.0]]]])
    dx = nn.MaxPool2d(2).backward(cache, np.array([[[[5.0]]], [[[7.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 5.0], [0.0, 0.0]]], [[[7.0, 0.0], [0.0, 0.0]]]])


def test_relu_forward_and_apply_match_the_where_formula_and_keep_nan():
    # Slow twin: the former forward np.where(x > 0, x, 0), bit for bit (signs of zero included)
    # wherever x is not NaN; a NaN stays NaN in both forms, so the check of z catches it.
    for dtype in (np.float64, np.float32):
        tiny, huge = np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max
        special = np.array([0.0, -0.0, tiny, -tiny, huge, -huge, np.inf, -np.inf], dtype=dtype)
        x = np.concatenate([np.random.default_rng(2).standard_normal(300).astype(dtype), special])
        expected = np.where(x > 0, x, dtype(0))
        for y in (nn.ReLU().forward(x)[0], nn.ReLU().apply(x, np)):
            assert y.dtype == dtype
            np.testing.assert_array_equal(y, expected)
            np.testing.assert_array_equal(np.signbit(y), np.signbit(expected))
    nan = np.array([np.nan, 1.0, -1.0])
    np.testing.assert_array_equal(nn.ReLU().forward(nan)[0], [np.nan, 1.0, 0.0])
    np.testing.assert_array_equal(nn.ReLU().apply(nan, np), [np.nan, 1.0, 0.0])


def test_relu_derivative_at_zero_is_zero():
    # By hand: ReLU'(x) = [x > 0], so 0 at x = 0 and x = -0.0; dy passes only where x > 0.
    x = np.array([0.0, -0.0, 2.0, -3.0])
    y, cache = nn.ReLU().forward(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(nn.ReLU().backward(cache, np.full(4, 5.0)), [0.0, 0.0, 5.0, 0.0])
