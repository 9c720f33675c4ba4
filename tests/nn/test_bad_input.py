"""Bad input to kfqn_ref.nn: one table, one row per case (conventions, "Errors and validation").

Each row: an id, the call, the exception type, a regex the message must match (``re.search``) and,
where the call could change something, a function returning the state that must come out bit for
bit unchanged. Wrong kind -> ``TypeError``, wrong value -> ``ValueError``, an overflow on valid
input -> ``NonFiniteError``; every message names the argument (and the layer), the expected and the
received form.
"""

import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from kfqn_ref import nn
from kfqn_ref._checks import NonFiniteError
from kfqn_ref.nn.im2col import col2im, im2col


class Row(NamedTuple):
    id: str
    call: Callable[[], object]
    error: type[Exception]
    pattern: str
    state: Callable[[], list] | None = None


def _mlp(loss=None, activation=nn.Tanh):
    layers = [nn.Dense(3, 4), activation(), nn.Dense(4, 2)]
    return nn.Sequential(layers, loss or nn.SquaredError())


def _conv_model():
    layers = [
        nn.Conv2d(1, 3, 3), nn.ReLU(),
        nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(),
        nn.Dense(2 * 3 * 3, 4),
    ]  # fmt: skip
    return nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=0)


def _with(array, index, value):
    """A copy of ``array`` with ``array[index] = value``."""
    copy = array.copy()
    copy[index] = value
    return copy


def _overflowing_mlp():
    """Finite inputs and weights whose product overflows: the output ``z`` is not finite."""
    model = _mlp()
    weights = model.weights()
    weights[1][:] = np.finfo(np.float64).max
    model.set_weights(weights)
    return model


def _quietly(call):
    def run():
        with np.errstate(over="ignore", invalid="ignore"):
            return call()

    return run


def _weights_of(model):
    return lambda: model.weights()


X = np.ones((5, 3))
T = np.zeros((5, 2))
Z = np.zeros((3, 4))
MLP = _mlp()
SOFTMAX_MLP = _mlp(nn.SoftmaxCrossEntropy())
CONV = _conv_model()
OVERFLOW = _overflowing_mlp()
FORWARD = MLP.forward_pass(X)
W0, W1 = MLP.weights()
DENSE_WEIGHT = np.ones((2, 4))
CONV_WEIGHT = np.ones((3, 2 * 2 * 2 + 1))
INT_MAX = r"an int >= 1 or a pair \(h, w\) of such ints"

ROWS = [
    # -- layer hyperparameters: an integer >= 1 (TypeError for another kind) ---------------------
    Row(
        "dense-d_in-0",
        lambda: nn.Dense(0, 3),
        ValueError,
        r"Dense: d_in must be an integer >= 1, got 0$",
    ),
    Row(
        "dense-d_out-negative",
        lambda: nn.Dense(3, -2),
        ValueError,
        r"Dense: d_out must be an integer >= 1, got -2",
    ),
    Row(
        "dense-d_in-float",
        lambda: nn.Dense(2.5, 3),
        TypeError,
        r"Dense: d_in must be an integer, got float 2\.5",
    ),
    Row(
        "dense-d_in-bool",
        lambda: nn.Dense(True, 2),
        TypeError,
        r"Dense: d_in must be an integer, got bool True",
    ),
    Row(
        "dense-bias-str",
        lambda: nn.Dense(2, 3, bias="yes"),
        TypeError,
        r"Dense: bias must be True or False, got str 'yes'",
    ),
    Row(
        "conv-c_in-0",
        lambda: nn.Conv2d(0, 3, 3),
        ValueError,
        r"Conv2d: c_in must be an integer >= 1, got 0",
    ),
    Row(
        "conv-c_out-0",
        lambda: nn.Conv2d(2, 0, 3),
        ValueError,
        r"Conv2d: c_out must be an integer >= 1, got 0",
    ),
    Row(
        "conv-bias-int",
        lambda: nn.Conv2d(2, 3, 3, bias=1),
        TypeError,
        r"Conv2d: bias must be True or False, got int 1",
    ),
    Row(
        "conv-kernel-0",
        lambda: nn.Conv2d(2, 3, 0),
        ValueError,
        rf"Conv2d: kernel_size must be {INT_MAX}, got 0",
    ),
    Row(
        "conv-kernel-1-tuple",
        lambda: nn.Conv2d(2, 3, (3,)),
        ValueError,
        rf"Conv2d: kernel_size must be {INT_MAX}, got \(3,\)",
    ),
    Row(
        "conv-kernel-str",
        lambda: nn.Conv2d(2, 3, "3"),
        TypeError,
        r"Conv2d: kernel_size must be an int >= 1 or a pair .*, got str '3'",
    ),
    Row(
        "conv-stride-negative",
        lambda: nn.Conv2d(2, 3, 3, stride=-1),
        ValueError,
        r"Conv2d: stride must be an int >= 1",
    ),
    Row(
        "conv-stride-0",
        lambda: nn.Conv2d(2, 3, 3, stride=0),
        ValueError,
        r"Conv2d: stride must be an int >= 1",
    ),
    Row(
        "conv-stride-float",
        lambda: nn.Conv2d(2, 3, 3, stride=1.5),
        TypeError,
        r"Conv2d: stride must be an int >= 1 .*, got float 1\.5",
    ),
    Row(
        "conv-padding-negative",
        lambda: nn.Conv2d(2, 3, 3, padding=-1),
        ValueError,
        r"Conv2d: padding must be an int >= 0",
    ),
    Row(
        "conv-dilation-0",
        lambda: nn.Conv2d(2, 3, 3, dilation=(1, 0)),
        ValueError,
        r"Conv2d: dilation must be an int >= 1",
    ),
    Row(
        "maxpool-padding-above-half",
        lambda: nn.MaxPool2d(2, padding=2),
        ValueError,
        r"MaxPool2d: padding must be at most half the kernel size \(2, 2\)",
    ),
    Row(
        "avgpool-stride-negative",
        lambda: nn.AvgPool2d(3, stride=-1),
        ValueError,
        r"AvgPool2d: stride must be an int >= 1",
    ),
    Row(
        "avgpool-kernel-0",
        lambda: nn.AvgPool2d(0),
        ValueError,
        r"AvgPool2d: kernel_size must be an int >= 1",
    ),
    Row(
        "avgpool-kernel-float",
        lambda: nn.AvgPool2d(2.0),
        TypeError,
        r"AvgPool2d: kernel_size must be .*, got float 2\.0",
    ),
    # -- model construction ---------------------------------------------------------------------
    Row(
        "model-layer-str",
        lambda: nn.Sequential([nn.Dense(2, 2), "relu"], nn.SquaredError()),
        TypeError,
        r"layers must be a list of kfqn_ref\.nn layers",
    ),
    Row(
        "model-loss-str",
        lambda: nn.Sequential([nn.Dense(2, 2)], "mse"),
        TypeError,
        r"loss must be a kfqn_ref\.nn loss .*got str",
    ),
    Row(
        "model-no-trainable-layer",
        lambda: nn.Sequential([nn.ReLU()], nn.SquaredError()),
        ValueError,
        r"at least one trainable layer",
    ),
    Row(
        "model-dtype-int32",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), dtype=np.int32),
        TypeError,
        r"dtype must be float64 or float32, got int32",
    ),
    Row(
        "model-dtype-float16",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), dtype=np.float16),
        TypeError,
        r"dtype must be float64 or float32, got float16",
    ),
    Row(
        "model-seed-negative",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=-1),
        ValueError,
        r"seed must be an integer >= 0, got -1",
    ),
    Row(
        "model-seed-float",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=1.5),
        TypeError,
        r"seed must be an integer, got float 1\.5",
    ),
    Row(
        "model-seed-bool",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=True),
        TypeError,
        r"seed must be an integer, got bool",
    ),
    # -- X: kind, dtype, shape through the layers, NaN/Inf ----------------------------------------
    Row(
        "X-float32",
        lambda: MLP.forward(X.astype(np.float32)),
        TypeError,
        r"X has dtype float32 but float64 was expected",
    ),
    Row(
        "X-int64",
        lambda: MLP.forward(np.ones((5, 3), dtype=np.int64)),
        TypeError,
        r"X must have dtype float64 or float32, got int64",
    ),
    Row(
        "X-list",
        lambda: MLP.forward([[1.0, 2.0, 3.0]]),
        TypeError,
        r"X must be an array of float64 or float32, got list",
    ),
    Row(
        "X-empty",
        lambda: MLP.forward(np.ones((0, 3))),
        ValueError,
        r"X must hold at least one sample",
    ),
    Row(
        "X-nan",
        lambda: MLP.forward_backward(_with(X, (1, 2), np.nan), T),
        ValueError,
        r"X contains NaN or Inf",
    ),
    Row(
        "X-inf",
        lambda: MLP.forward_pass(_with(X, (1, 2), np.inf)),
        ValueError,
        r"X contains NaN or Inf",
    ),
    Row(
        "X-minus-inf",
        lambda: MLP.forward(_with(X, (0, 0), -np.inf)),
        ValueError,
        r"X contains NaN or Inf",
    ),
    Row(
        "X-channels",
        lambda: CONV.forward(np.ones((8, 4, 5, 5))),
        ValueError,
        r"Conv2d \(layers\[0\]\) expected input of shape \(N, 1, H, W\), got \(8, 4, 5, 5\)",
    ),
    Row(
        "X-ndim",
        lambda: CONV.forward_backward(np.ones((8, 25)), np.zeros(8, dtype=int)),
        ValueError,
        r"Conv2d \(layers\[0\]\) expected input of shape \(N, 1, H, W\), got \(8, 25\)",
    ),
    Row(
        "X-deeper-layer",
        lambda: CONV.forward_pass(np.ones((2, 1, 6, 6))),
        ValueError,
        r"Dense \(layers\[4\]\) expected input of shape \(N, 18\), got \(2, 32\)",
    ),
    Row(
        "X-kernel-spans-padded-input",
        lambda: nn.Sequential(
            [nn.Conv2d(1, 1, 3, dilation=2), nn.Flatten(), nn.Dense(1, 1)], nn.SquaredError()
        ).forward(np.ones((2, 1, 4, 4))),
        ValueError,
        r"Conv2d \(layers\[0\]\): the kernel spans \(5, 5\).*padded input is only \(4, 4\)",
    ),
    Row(
        "shape-pool-spans-input",
        lambda: nn.Sequential(
            [nn.Conv2d(1, 1, 1), nn.MaxPool2d(3)], nn.SquaredError()
        ).output_shape((2, 1, 2, 2)),
        ValueError,
        r"MaxPool2d \(layers\[1\]\): the kernel spans \(3, 3\)",
    ),
    # -- T: kind, dtype, shape, NaN/Inf, domain --------------------------------------------------
    Row(
        "T-shape",
        lambda: MLP.forward_backward(X, np.zeros((5, 3))),
        ValueError,
        r"SquaredError targets t must have the shape of the output z, \(5, 2\), got \(5, 3\)",
    ),
    Row(
        "T-class-index-shape",
        lambda: SOFTMAX_MLP.forward_backward(X, np.zeros((5, 1), dtype=int)),
        ValueError,
        r"class-index targets t must have shape \(N,\) = \(5,\), got \(5, 1\)",
    ),
    Row(
        "T-float32",
        lambda: MLP.forward_backward(X, T.astype(np.float32)),
        TypeError,
        r"SquaredError targets t has dtype float32 but float64 was expected",
    ),
    Row(
        "T-int64",
        lambda: MLP.forward_backward(X, np.zeros((5, 2), dtype=np.int64)),
        TypeError,
        r"SquaredError targets t must have dtype float64 or float32, got int64",
    ),
    Row(
        "T-bool-softmax",
        lambda: SOFTMAX_MLP.forward_backward(X, np.zeros(5, dtype=bool)),
        TypeError,
        r"integer array of class indices \(N,\) or a float array .*got ndarray of dtype bool",
    ),
    Row(
        "T-list-softmax",
        lambda: SOFTMAX_MLP.forward_backward(X, [0, 1, 0, 1, 0]),
        TypeError,
        r"got list",
    ),
    Row(
        "T-nan",
        lambda: MLP.forward_backward(X, _with(T, (0, 0), np.nan)),
        ValueError,
        r"SquaredError targets t contains NaN or Inf",
    ),
    Row(
        "T-inf",
        lambda: MLP.forward_backward(X, _with(T, (0, 0), np.inf)),
        ValueError,
        r"SquaredError targets t contains NaN or Inf",
    ),
    Row(
        "T-output-not-a-matrix",
        lambda: nn.Sequential([nn.Conv2d(1, 2, 2)], nn.SquaredError()).forward_backward(
            np.ones((2, 1, 3, 3)), np.zeros((2, 2, 2, 2))
        ),
        ValueError,
        r"SquaredError expects network outputs z of shape \(N, d\)",
    ),
    Row(
        "T-sigmoid-above-1",
        lambda: nn.SigmoidCrossEntropy().value(Z, np.array([[0.0, 1.5, 0.5, 1.0]] * 3)),
        ValueError,
        r"SigmoidCrossEntropy targets t must lie in \[0, 1\], got values in \[0\.0, 1\.5\]",
    ),
    Row(
        "T-sigmoid-below-0",
        lambda: nn.SigmoidCrossEntropy().output_gradient(Z, np.full((3, 4), -0.1)),
        ValueError,
        r"must lie in \[0, 1\], got values in \[-0\.1",
    ),
    Row(
        "T-class-index-above",
        lambda: nn.SoftmaxCrossEntropy().value(Z, np.array([0, 4, 1])),
        ValueError,
        r"class indices must lie in \[0, 3\] for 4 classes, got values in \[0, 4\]",
    ),
    Row(
        "T-class-index-negative",
        lambda: nn.SoftmaxCrossEntropy().output_hessian(Z, np.array([0, -1, 1])),
        ValueError,
        r"class indices must lie in \[0, 3\] for 4 classes, got values in \[-1, 1\]",
    ),
    Row(
        "T-probability-row-sums",
        lambda: nn.SoftmaxCrossEntropy().value(Z, np.full((3, 4), 0.3)),
        ValueError,
        r"rows summing to 1",
    ),
    Row(
        "T-probability-entries",
        lambda: nn.SoftmaxCrossEntropy().output_hessian_sqrt(
            Z, np.array([[1.5, -0.5, 0.0, 0.0]] * 3)
        ),
        ValueError,
        r"entries in \[0, 1\]",
    ),
    # -- the loss called directly: z, rng ---------------------------------------------------------
    Row(
        "z-inf",
        lambda: nn.SquaredError().value(np.array([[0.0, np.inf, 1.0]]), np.zeros((1, 3))),
        ValueError,
        r"SquaredError: network output z contains NaN or Inf",
    ),
    *(
        Row(
            f"rng-int-{type(loss).__name__}",
            lambda loss=loss: loss.sample_targets(np.zeros((2, 3)), 0),
            TypeError,
            r"rng must be a numpy\.random\.Generator .*got int",
        )
        for loss in (nn.SquaredError(), nn.SigmoidCrossEntropy(), nn.SoftmaxCrossEntropy())
    ),
    *(
        Row(
            f"sample-empty-{name}",
            lambda loss=loss: loss.sample_targets(np.zeros((0, 3)), np.random.default_rng(0)),
            ValueError,
            rf"{name}\.sample_targets expects .* N >= 1, got \(0, 3\)",
        )
        for loss, name in (
            (nn.SquaredError(), "SquaredError"),
            (nn.SigmoidCrossEntropy(), "SigmoidCrossEntropy"),
            (nn.SoftmaxCrossEntropy(), "SoftmaxCrossEntropy"),
        )
    ),
    # -- an overflow on finite input: NonFiniteError naming the output ----------------------------
    Row(
        "overflow-forward",
        _quietly(lambda: OVERFLOW.forward(X)),
        NonFiniteError,
        r"network output z is not finite",
        _weights_of(OVERFLOW),
    ),
    Row(
        "overflow-forward_pass",
        _quietly(lambda: OVERFLOW.forward_pass(X)),
        NonFiniteError,
        r"network output z is not finite",
        _weights_of(OVERFLOW),
    ),
    Row(
        "overflow-forward_backward",
        _quietly(lambda: OVERFLOW.forward_backward(X, T)),
        NonFiniteError,
        r"network output z is not finite",
        _weights_of(OVERFLOW),
    ),
    # -- backward_pass ----------------------------------------------------------------------------
    Row(
        "dz-shape",
        lambda: MLP.backward_pass(FORWARD, np.ones((5, 3))),
        ValueError,
        r"output_gradients must have the shape of the output, \(5, 2\)",
    ),
    Row(
        "dz-float32",
        lambda: MLP.backward_pass(FORWARD, np.ones((5, 2), dtype=np.float32)),
        TypeError,
        r"output_gradients has dtype float32 but float64 was expected",
    ),
    Row(
        "dz-nan",
        lambda: MLP.backward_pass(FORWARD, _with(np.ones((5, 2)), (0, 1), np.nan)),
        ValueError,
        r"output_gradients contains NaN or Inf",
    ),
    Row(
        "dz-inf",
        lambda: MLP.backward_pass(FORWARD, _with(np.ones((5, 2)), (0, 1), -np.inf)),
        ValueError,
        r"output_gradients contains NaN or Inf",
    ),
    Row(
        "weight_gradients-int",
        lambda: MLP.backward_pass(FORWARD, np.ones((5, 2)), weight_gradients=1),
        TypeError,
        r"weight_gradients must be True or False, got int 1",
    ),
    Row(
        "weight_gradients-int-forward_backward",
        lambda: MLP.forward_backward(X, T, weight_gradients=1),
        TypeError,
        r"weight_gradients must be True or False, got int 1",
    ),
    Row(
        "forward_pass-not-a-ForwardPass",
        lambda: MLP.backward_pass(X, np.ones((5, 2))),
        TypeError,
        r"forward_pass must be the ForwardPass",
    ),
    Row(
        "forward_pass-fewer-layers",
        lambda: MLP.backward_pass(
            nn.Sequential([nn.Dense(3, 2)], nn.SquaredError()).forward_pass(X), np.ones((5, 2))
        ),
        ValueError,
        r"forward_pass comes from a model with 1 layers; this model has 3",
    ),
    Row(
        "forward_pass-other-activation",
        lambda: MLP.backward_pass(_mlp(activation=nn.ReLU).forward_pass(X), np.ones((5, 2))),
        ValueError,
        r"different structure: layers\[1\] is ReLU\(\) there but Tanh\(\) in this model",
    ),
    # -- set_weights: nothing changes on a rejected call ------------------------------------------
    Row(
        "weights-nan",
        lambda: MLP.set_weights([W0 + 1.0, _with(W1, (0, 0), np.nan)]),
        ValueError,
        r"weights\[1\] for Dense \(layers\[2\]\) contains NaN or Inf",
        _weights_of(MLP),
    ),
    Row(
        "weights-inf",
        lambda: MLP.set_weights([W0 + 1.0, _with(W1, (0, 0), np.inf)]),
        ValueError,
        r"weights\[1\] for Dense \(layers\[2\]\) contains NaN or Inf",
        _weights_of(MLP),
    ),
    Row(
        "weights-shape",
        lambda: MLP.set_weights([W0 + 1.0, np.ones((2, 4))]),
        ValueError,
        r"weights\[1\] for Dense \(layers\[2\]\) must have shape \(2, 5\) "
        r"\(homogeneous \[W \| b\]\), got \(2, 4\)",
        _weights_of(MLP),
    ),
    Row(
        "weights-count",
        lambda: MLP.set_weights([W0 + 1.0]),
        ValueError,
        r"weights must be a list of 2 homogeneous matrices .*got 1",
        _weights_of(MLP),
    ),
    Row(
        "weights-an-array",
        lambda: MLP.set_weights(W0 + 1.0),
        TypeError,
        r"weights must be a list of 2 homogeneous matrices .*got ndarray",
        _weights_of(MLP),
    ),
    Row(
        "weights-float32",
        lambda: MLP.set_weights([W0 + 1.0, W1.astype(np.float32)]),
        TypeError,
        r"weights\[1\] for Dense \(layers\[2\]\) has dtype float32",
        _weights_of(MLP),
    ),
    Row(
        "weights-list-entry",
        lambda: MLP.set_weights([W0 + 1.0, W1.tolist()]),
        TypeError,
        r"weights\[1\] for Dense \(layers\[2\]\) must be an array .*got list",
        _weights_of(MLP),
    ),
    # -- layers called directly: O(1) checks of x and the weight (entries are not read) -----------
    Row(
        "dense-x-width",
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, np.ones((5, 4))),
        ValueError,
        re.escape("Dense expected input of shape (N, 3), got (5, 4)"),
    ),
    Row(
        "dense-x-ndim",
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, np.ones(3)),
        ValueError,
        re.escape("Dense expected input of shape (N, 3), got (3,)"),
    ),
    Row(
        "dense-weight-shape",
        lambda: nn.Dense(3, 2).forward(np.ones((2, 3)), np.ones((5, 3))),
        ValueError,
        re.escape("Dense: weight must have shape (2, 4) (homogeneous [W | b]), got (2, 3)"),
    ),
    Row(
        "dense-weight-float32",
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT.astype(np.float32), np.ones((5, 3))),
        TypeError,
        re.escape("Dense: weight has dtype float32 but input x has dtype float64 (mixed dtypes"),
    ),
    Row(
        "dense-weight-list",
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT.tolist(), np.ones((5, 3))),
        TypeError,
        re.escape("Dense: weight must be an array of float64 or float32, got list"),
    ),
    Row(
        "dense-x-int64",
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, np.ones((5, 3), dtype=np.int64)),
        TypeError,
        re.escape("Dense: input x must have dtype float64 or float32, got int64"),
    ),
    Row(
        "dense-x-list",
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, [[1.0, 2.0, 3.0]]),
        TypeError,
        re.escape("Dense: input x must be an array of float64 or float32, got list"),
    ),
    Row(
        "conv-x-channels",
        lambda: nn.Conv2d(2, 3, 2).forward(CONV_WEIGHT, np.ones((1, 1, 4, 4))),
        ValueError,
        re.escape("Conv2d expected input of shape (N, 2, H, W), got (1, 1, 4, 4)"),
    ),
    Row(
        "conv-x-ndim",
        lambda: nn.Conv2d(2, 3, 2).forward(CONV_WEIGHT, np.ones((2, 4, 4))),
        ValueError,
        re.escape("Conv2d expected input of shape (N, 2, H, W), got (2, 4, 4)"),
    ),
    Row(
        "conv-weight-shape",
        lambda: nn.Conv2d(2, 3, 2).forward(CONV_WEIGHT[:, :-1], np.ones((1, 2, 4, 4))),
        ValueError,
        re.escape("Conv2d: weight must have shape (3, 9) (homogeneous [W | b]), got (3, 8)"),
    ),
    Row(
        "maxpool-x-ndim",
        lambda: nn.MaxPool2d(2).forward(np.ones((1, 4, 4))),
        ValueError,
        re.escape(
            "MaxPool2d expected input of shape (N, C, H, W) with C, H, W >= 1, got (1, 4, 4)"
        ),
    ),
    Row(
        "avgpool-x-ndim",
        lambda: nn.AvgPool2d(2).forward(np.ones((4, 4))),
        ValueError,
        re.escape("AvgPool2d expected input of shape (N, C, H, W) with C, H, W >= 1, got (4, 4)"),
    ),
    Row(
        "avgpool-x-no-channels",
        lambda: nn.AvgPool2d(2).forward(np.ones((1, 0, 4, 4))),
        ValueError,
        re.escape(
            "AvgPool2d expected input of shape (N, C, H, W) with C, H, W >= 1, got (1, 0, 4, 4)"
        ),
    ),
    Row(
        "flatten-x-ndim",
        lambda: nn.Flatten().forward(np.ones(4)),
        ValueError,
        re.escape("Flatten expected input of shape (N, ...) with at least 2 dimensions, got (4,)"),
    ),
    Row(
        "relu-x-int32",
        lambda: nn.ReLU().forward(np.ones(3, dtype=np.int32)),
        TypeError,
        re.escape("ReLU: input x must have dtype float64 or float32, got int32"),
    ),
    # -- im2col / col2im (standalone: they check finiteness too) ----------------------------------
    Row(
        "im2col-x-ndim",
        lambda: im2col(np.ones((2, 3)), 2),
        ValueError,
        re.escape("im2col: x must have 4 dimensions, got shape (2, 3)"),
    ),
    Row(
        "im2col-x-int64",
        lambda: im2col(np.ones((1, 1, 3, 3), dtype=np.int64), 2),
        TypeError,
        re.escape("im2col: x must have dtype float64 or float32, got int64"),
    ),
    Row(
        "im2col-x-nan",
        lambda: im2col(np.full((1, 1, 3, 3), np.nan), 2),
        ValueError,
        re.escape("im2col: x contains NaN or Inf"),
    ),
    Row(
        "im2col-stride-float",
        lambda: im2col(np.ones((1, 1, 3, 3)), 2, stride=1.0),
        TypeError,
        r"im2col: stride must be an int >= 1 .*, got float 1\.0",
    ),
    Row(
        "col2im-cols-shape",
        lambda: col2im(im2col(np.ones((2, 1, 4, 4)), 3)[:, :3], (2, 1, 4, 4), 3),
        ValueError,
        re.escape(
            "col2im: cols must have shape (2, 4, 9) for input_shape (2, 1, 4, 4), got (2, 3, 9)"
        ),
    ),
    Row(
        "col2im-input_shape-length",
        lambda: col2im(np.ones((1, 1, 9)), (1, 1, 3), 3),
        ValueError,
        re.escape("col2im: input_shape must be a tuple (N, C, H, W) of 4 ints >= 1, got (1, 1, 3)"),
    ),
    Row(
        "col2im-input_shape-float",
        lambda: col2im(np.ones((1, 1, 9)), (1, 1, 3.0, 3), 3),
        TypeError,
        re.escape(
            "col2im: input_shape must be a tuple (N, C, H, W) of ints, got tuple (1, 1, 3.0, 3)"
        ),
    ),
    Row(
        "col2im-input_shape-zero",
        lambda: col2im(np.ones((1, 1, 9)), (1, 0, 3, 3), 3),
        ValueError,
        re.escape(
            "col2im: input_shape must be a tuple (N, C, H, W) of 4 ints >= 1, got (1, 0, 3, 3)"
        ),
    ),
    Row(
        "col2im-cols-inf",
        lambda: col2im(np.full((1, 1, 9), np.inf), (1, 1, 3, 3), 3),
        ValueError,
        re.escape("col2im: cols contains NaN or Inf"),
    ),
]

# -- arrays that are not plain ndarrays, targets that would wrap, integers beyond 64 bits ---------
#: How a refused numpy.matrix or masked array is named (docs/reliability.md).
NOT_PLAIN = r"must be an array of float64 or float32, got (matrix|MaskedArray) of dtype float64"
SOFTMAX_TARGETS = r"targets t must be an integer array of class indices .* got (matrix|MaskedArray)"
for _kind, _wrap in (("matrix", np.asmatrix), ("masked", np.ma.masked_array)):
    ROWS += [
        Row(f"forward-X-{_kind}", lambda w=_wrap: MLP.forward(w(X)), TypeError, "X " + NOT_PLAIN),
        Row(
            f"forward_backward-X-{_kind}",
            lambda w=_wrap: MLP.forward_backward(w(X), T),
            TypeError,
            "X " + NOT_PLAIN,
            _weights_of(MLP),
        ),
        Row(
            f"forward_backward-T-{_kind}",
            lambda w=_wrap: MLP.forward_backward(X, w(T)),
            TypeError,
            "SquaredError targets t " + NOT_PLAIN,
        ),
        Row(
            f"softmax-class-indices-{_kind}",
            lambda w=_wrap: SOFTMAX_MLP.forward_backward(X, w(np.zeros((1, 5), np.int64))),
            TypeError,
            SOFTMAX_TARGETS,
        ),
        Row(
            f"loss-value-z-{_kind}",
            lambda w=_wrap: nn.SquaredError().value(w(Z), Z),
            TypeError,
            "network output z " + NOT_PLAIN,
        ),
        Row(
            f"set_weights-{_kind}",
            lambda w=_wrap: MLP.set_weights([w(W0), W1]),
            TypeError,
            r"weights\[0\] for Dense \(layers\[0\]\) " + NOT_PLAIN,
            _weights_of(MLP),
        ),
        Row(
            f"backward_pass-output_gradients-{_kind}",
            lambda w=_wrap: MLP.backward_pass(FORWARD, w(np.ones((5, 2)))),
            TypeError,
            "output_gradients " + NOT_PLAIN,
        ),
    ]
ROWS += [
    Row(
        "softmax-uint64-class-index-beyond-int64",
        lambda: SOFTMAX_MLP.forward_backward(X, np.full(5, 2**64 - 1, dtype=np.uint64)),
        ValueError,
        r"class indices must lie in \[0, 1\] for 2 classes, got values in \[18446744073709551615",
    ),
    Row(
        "forward_backward-T-None", lambda: MLP.forward_backward(X, None), TypeError, "got NoneType"
    ),
    Row("forward-X-None", lambda: MLP.forward(None), TypeError, "X must be an array"),
    Row(
        "dense-d_in-beyond-64-bits",
        lambda: nn.Dense(10**400, 2),
        ValueError,
        r"Dense: d_in must be an integer of magnitude <= 2\*\*63 - 1 \(64 bits\), got one of 1329",
    ),
    Row(
        "conv-kernel-beyond-64-bits",
        lambda: nn.Conv2d(1, 2, 2**64),
        ValueError,
        r"kernel_size must be an int >= 1 or a pair \(h, w\) of such ints, got 1844674407370955",
    ),
    Row(
        "sequential-seed-beyond-64-bits",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=10**30),
        ValueError,
        r"seed must be an integer of magnitude <= 2\*\*63 - 1",
    ),
    Row(
        "dense-d_in-integral-float",
        lambda: nn.Dense(2.0, 2),
        TypeError,
        r"Dense: d_in must be an integer, got float 2\.0",
    ),
    Row(
        "sequential-seed-negative",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=-1),
        ValueError,
        r"seed must be an integer >= 0, got -1",
    ),
    Row(
        "sequential-seed-float",
        lambda: nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=1.0),
        TypeError,
        r"seed must be an integer, got float",
    ),
]


def _snapshot(state):
    return None if state is None else [(a.dtype, a.shape, a.tobytes()) for a in state()]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row):
    before = _snapshot(row.state)
    with pytest.raises(row.error) as caught:
        row.call()
    assert type(caught.value) is row.error  # not a subclass: NonFiniteError is a ValueError
    assert re.search(row.pattern, str(caught.value)), f"{caught.value!s} !~ {row.pattern}"
    assert _snapshot(row.state) == before


def test_row_ids_are_unique():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))


def test_backward_pass_accepts_a_forward_pass_of_an_equal_structure():
    # The counterpart of the structure rows: layers hold no state, so a twin built from equal (not
    # identical) layers gives the same records.
    model, twin = _mlp(), _mlp()
    dz = np.ones((5, 2))
    got = model.backward_pass(twin.forward_pass(X), dz)
    want = model.backward_pass(model.forward_pass(X), dz)
    for got_record, want_record in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_record.grad, want_record.grad)
