"""Hypothesis strategies for tiny float64 nets, and builders for the special cases of the tests.

Every case is a :class:`Case` ``(model, X, T)``: small enough for explicit autograd Hessians
(a few dozen parameters per layer, pre-activations of at most a few hundred entries).
"""

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from kfqn_ref import nn

ACTIVATIONS = (nn.Identity, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
LOSSES = (nn.SquaredError, nn.SigmoidCrossEntropy, nn.SoftmaxCrossEntropy)

sizes = st.integers(min_value=1, max_value=4)
batch_sizes = st.integers(min_value=1, max_value=3)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
activations = st.sampled_from(ACTIVATIONS).map(lambda cls: cls())
losses = st.sampled_from(LOSSES).map(lambda cls: cls())


class Case(NamedTuple):
    """A model with a minibatch ``X`` and targets ``T`` for its loss."""

    model: nn.Sequential
    X: np.ndarray
    T: np.ndarray


def targets_for(loss, n_samples, n_outputs, rng):
    """Targets in the domain of ``loss``: normal (squared error), uniform in [0, 1] (sigmoid
    cross-entropy, soft labels), class indices (softmax cross-entropy)."""
    if isinstance(loss, nn.SquaredError):
        return rng.standard_normal((n_samples, n_outputs))
    if isinstance(loss, nn.SigmoidCrossEntropy):
        return rng.uniform(size=(n_samples, n_outputs))
    return rng.integers(0, n_outputs, size=n_samples)


def build_case(layers, loss, input_shape, seed):
    """``Sequential(layers, loss, seed)`` with standard-normal inputs and matching targets."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(layers, loss, seed=seed)
    X = rng.standard_normal(input_shape)
    n_outputs = model.output_shape(input_shape)[1]
    return Case(model, X, targets_for(loss, input_shape[0], n_outputs, rng))


@st.composite
def dense_cases(draw, batch_sizes=batch_sizes, linear=False, loss=None):
    """A dense net of 1 to 3 layers (random widths, activations, bias flags) and a loss.

    ``linear=True`` draws a deep linear net (no activations); ``loss`` fixes the loss.
    """
    widths = draw(st.lists(sizes, min_size=2, max_size=4))
    layers = []
    for k, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if k:
            layers.append(nn.Identity() if linear else draw(activations))
        layers.append(nn.Dense(d_in, d_out, bias=draw(st.booleans())))
    loss = draw(losses) if loss is None else loss
    return build_case(layers, loss, (draw(batch_sizes), widths[0]), draw(seeds))


@st.composite
def conv_geometries(draw):
    """``(c_in, H, W, Conv2d)``: kernel 1-3, stride 1-2, padding 0-1, dilation 1-2, and an input
    whose height and width are each 0 to 3 more than the smallest that the kernel span
    ``dilation (kernel - 1) + 1`` fits after padding (``max(1, span - 2 padding)``): at least one
    output row and column."""
    kernel = draw(st.integers(min_value=1, max_value=3))
    stride, dilation = (draw(st.integers(min_value=1, max_value=2)) for _ in range(2))
    padding = draw(st.integers(min_value=0, max_value=1))
    span = dilation * (kernel - 1) + 1
    smallest = max(1, span - 2 * padding)
    height, width = (
        draw(st.integers(min_value=smallest, max_value=smallest + 3)) for _ in range(2)
    )
    c_in, c_out = (
        draw(st.integers(min_value=1, max_value=2)),
        draw(st.integers(min_value=1, max_value=3)),
    )
    conv = nn.Conv2d(
        c_in,
        c_out,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=draw(st.booleans()),
    )
    return c_in, height, width, conv


#: Window of the pooling layers drawn after a conv layer.
POOL = 2


def _tail_options(draw, c_out, out_h, out_w):
    """What may follow the first conv layer and its activation: nothing, a small conv layer with
    an activation, or (when the output is large enough) max or average pooling."""
    options = [[], [nn.Conv2d(c_out, 2, min(POOL, out_h, out_w)), draw(activations)]]
    if min(out_h, out_w) >= POOL:
        options += [[nn.MaxPool2d(POOL, stride=1)], [nn.AvgPool2d(POOL, stride=1)]]
    return options


@st.composite
def conv_cases(draw):
    """Conv -> activation -> [conv -> activation | pooling] -> Flatten -> Dense, and a loss."""
    c_in, height, width, conv = draw(conv_geometries())
    shape = (draw(batch_sizes), c_in, height, width)
    layers = [conv, draw(activations)]
    layers += draw(
        st.sampled_from(_tail_options(draw, conv.c_out, *conv.output_size(height, width)))
    )
    n_features = nn.Sequential(layers + [nn.Flatten()], nn.SquaredError()).output_shape(shape)[1]
    layers += [nn.Flatten(), nn.Dense(n_features, draw(st.integers(min_value=2, max_value=3)))]
    return build_case(layers, draw(losses), shape, draw(seeds))
