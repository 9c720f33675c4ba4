"""Property tests (hypothesis; the deterministic ``ci`` profile of ``tests/conftest.py``) over
shapes, kernel sizes, strides, paddings, dilations and batch sizes, each against an independent
route: nested loops or autograd on ``tests/nn/reference.py``. float64, 1e-10 relative."""

import autograd.numpy as anp
import numpy as np
from autograd import grad
from helpers.compare import assert_close
from hypothesis import given
from hypothesis import strategies as st

from kfqn_ref import nn
from kfqn_ref.nn.im2col import col2im, im2col
from tests.nn.reference import (
    avg_pool,
    max_pool,
    mean,
    naive_conv2d,
    naive_pool2d,
    reference_loss,
)

seeds = st.integers(0, 2**32 - 1)


def pairs(low, high):
    return st.tuples(st.integers(low, high), st.integers(low, high))


@st.composite
def conv_cases(draw):
    """A Conv2d hyperparameter set and an input shape it fits (padded input >= dilated kernel)."""
    kernel, stride, padding, dilation = (
        draw(pairs(1, 3)),
        draw(pairs(1, 3)),
        draw(pairs(0, 2)),
        draw(pairs(1, 2)),
    )
    sizes = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = max(1, span - 2 * padding[axis])
        sizes.append(draw(st.integers(smallest, smallest + 4)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *sizes)
    return shape, dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation)


@st.composite
def pool_cases(draw):
    """A pooling layer (max or average) and an input shape it fits."""
    kernel, stride = draw(pairs(1, 3)), draw(pairs(1, 3))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    shape = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        *(draw(st.integers(max(1, kernel[a] - 2 * padding[a]), kernel[a] + 4)) for a in range(2)),
    )
    layer_type = draw(st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))
    return layer_type(kernel, stride, padding), shape


@given(conv_cases(), st.integers(1, 3), st.booleans(), seeds)
def test_conv2d_matches_nested_loops(case, c_out, bias, seed):
    shape, geometry = case
    layer = nn.Conv2d(shape[1], c_out, bias=bias, **geometry)
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal(shape), rng.standard_normal(layer.weight_shape)
    kh, kw = layer.kernel_size
    kernel_weights = weight[:, : shape[1] * kh * kw].reshape(c_out, shape[1], kh, kw)
    expected = naive_conv2d(
        x,
        kernel_weights,
        weight[:, -1] if bias else None,
        layer.stride,
        layer.padding,
        layer.dilation,
    )
    y, cache = layer.forward(weight, x)
    assert y.shape == expected.shape
    assert cache.a.shape == (shape[0], expected.shape[2] * expected.shape[3], layer.weight_shape[1])
    assert_close(y, expected, what=f"{layer!r} on {shape}")


@given(conv_cases(), seeds)
def test_col2im_is_adjoint_of_im2col(case, seed):
    # <im2col(x), y> = <x, col2im(y)>; rounding in the sums is bounded by the sum of |terms|.
    shape, geometry = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols = im2col(x, **geometry)
    y = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * y)
    rhs = np.sum(x * col2im(y, shape, **geometry))
    assert_close(rhs, lhs, rtol=0.0, atol=1e-12 * np.sum(np.abs(cols * y)), what="<x, col2im(y)>")


@given(pool_cases(), seeds)
def test_pooling_forward_matches_nested_loops_and_backward_matches_autograd(case, seed):
    layer, shape = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    reduce, reference = (max, max_pool) if isinstance(layer, nn.MaxPool2d) else (mean, avg_pool)
    y, cache = layer.forward(x)
    assert_close(
        y, naive_pool2d(x, layer.kernel_size, layer.stride, layer.padding, reduce), what=repr(layer)
    )
    w = rng.standard_normal(y.shape)
    expected = grad(lambda u: anp.sum(w * reference(layer, u)))(x)
    assert_close(layer.backward(cache, w), expected, what=f"backward of {layer!r}")


@given(
    conv_cases(),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([nn.Tanh, nn.ReLU, nn.Softplus]),
    seeds,
)
def test_conv_net_records_match_autograd_and_are_per_sample(case, c_out, bias, activation, seed):
    # Expected grads: autograd on the reference forward. Per-sample property: each sample's g, h
    # and a~ do not depend on the rest of the minibatch, and grad is the mean of per-sample grads.
    shape, geometry = case
    conv = nn.Conv2d(shape[1], c_out, bias=bias, **geometry)
    out_h, out_w = conv.output_size(shape[2], shape[3])
    layers = [conv, activation(), nn.Flatten(), nn.Dense(c_out * out_h * out_w, 2)]
    model = nn.Sequential(layers, nn.SquaredError(), seed=seed % 1000)
    rng = np.random.default_rng(seed)
    X, T = rng.standard_normal(shape), rng.standard_normal((shape[0], 2))
    result = model.forward_backward(X, T)
    expected = grad(lambda w: reference_loss(model, w, X, T))(model.weights())
    for record, want in zip(result.records, expected, strict=True):
        assert_close(record.grad, want, what=f"df/dW~ of layers[{record.layer_index}]")
    singles = [model.forward_backward(X[n : n + 1], T[n : n + 1]) for n in range(shape[0])]
    for j, record in enumerate(result.records):
        for field in ("a", "h", "g"):
            stacked = np.concatenate([getattr(s.records[j], field) for s in singles])
            assert_close(
                getattr(record, field), stacked, what=f"{field} of layers[{record.layer_index}]"
            )
        mean_grad = np.mean([s.records[j].grad for s in singles], axis=0)
        assert_close(
            record.grad, mean_grad, what=f"mean of per-sample grads, layers[{record.layer_index}]"
        )


@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.booleans(), seeds)
def test_dense_records_match_autograd(batch, d_in, d_out, bias, seed):
    model = nn.Sequential(
        [nn.Dense(d_in, d_out, bias=bias), nn.Sigmoid(), nn.Dense(d_out, 3)],
        nn.SoftmaxCrossEntropy(),
        seed=seed % 1000,
    )
    rng = np.random.default_rng(seed)
    X, T = rng.standard_normal((batch, d_in)), rng.integers(0, 3, size=batch)
    result = model.forward_backward(X, T)
    expected = grad(lambda w: reference_loss(model, w, X, T))(model.weights())
    for record, want in zip(result.records, expected, strict=True):
        assert_close(record.grad, want, what=f"df/dW~ of layers[{record.layer_index}]")
