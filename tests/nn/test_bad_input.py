"""Bad input raises ValueError/TypeError with a message that names the argument and what was
expected, and a rejected call changes nothing (conventions §10)."""

import re

import numpy as np
import pytest

from kfqn_ref import nn
from kfqn_ref._checks import NonFiniteError
from kfqn_ref.nn.im2col import col2im, im2col


def _conv_model():
    layers = [
        nn.Conv2d(1, 3, 3), nn.ReLU(),
        nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(),
        nn.Dense(2 * 3 * 3, 4),
    ]  # fmt: skip
    return nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=0)


def _mlp(loss=None):
    return nn.Sequential([nn.Dense(3, 4), nn.Tanh(), nn.Dense(4, 2)], loss or nn.SquaredError())


X_MLP = np.ones((5, 3))
T_MLP = np.zeros((5, 2))

# -- layer hyperparameters -------------------------------------------------------------------------

BAD_LAYERS = [
    (lambda: nn.Dense(0, 3), ValueError, "Dense: d_in must be a positive int, got 0"),
    (lambda: nn.Dense(3, -2), ValueError, "Dense: d_out must be a positive int, got -2"),
    (lambda: nn.Dense(2.5, 3), ValueError, "Dense: d_in must be a positive int, got 2.5"),
    (lambda: nn.Dense(2, 3, bias="yes"), TypeError, "Dense: bias must be True or False"),
    (lambda: nn.Conv2d(0, 3, 3), ValueError, "Conv2d: c_in must be a positive int, got 0"),
    (lambda: nn.Conv2d(2, 0, 3), ValueError, "Conv2d: c_out must be a positive int, got 0"),
    (lambda: nn.Conv2d(2, 3, 0), ValueError, "Conv2d: kernel_size must be an int >= 1"),
    (
        lambda: nn.Conv2d(2, 3, (3,)),
        ValueError,
        "Conv2d: kernel_size must be an int >= 1 or a pair",
    ),
    (lambda: nn.Conv2d(2, 3, 3, stride=-1), ValueError, "Conv2d: stride must be an int >= 1"),
    (lambda: nn.Conv2d(2, 3, 3, stride=0), ValueError, "Conv2d: stride must be an int >= 1"),
    (lambda: nn.Conv2d(2, 3, 3, padding=-1), ValueError, "Conv2d: padding must be an int >= 0"),
    (
        lambda: nn.Conv2d(2, 3, 3, dilation=(1, 0)),
        ValueError,
        "Conv2d: dilation must be an int >= 1",
    ),
    (lambda: nn.Conv2d(2, 3, 3, stride=1.5), ValueError, "Conv2d: stride must be an int >= 1"),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError, "MaxPool2d: padding must be at most half"),
    (lambda: nn.AvgPool2d(3, stride=-1), ValueError, "AvgPool2d: stride must be an int >= 1"),
    (lambda: nn.AvgPool2d(0), ValueError, "AvgPool2d: kernel_size must be an int >= 1"),
]


@pytest.mark.parametrize(
    ("make", "error", "message"), BAD_LAYERS, ids=[m for _, _, m in BAD_LAYERS]
)
def test_invalid_layer_hyperparameters(make, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_kernel_larger_than_padded_input_names_the_layer():
    model = nn.Sequential(
        [nn.Conv2d(1, 1, 3, dilation=2), nn.Flatten(), nn.Dense(1, 1)], nn.SquaredError()
    )
    with pytest.raises(
        ValueError,
        match=r"Conv2d \(layers\[0\]\): the kernel spans \(5, 5\).*padded input is only \(4, 4\)",
    ):
        model.forward(np.ones((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"MaxPool2d \(layers\[1\]\): the kernel spans \(3, 3\)"):
        nn.Sequential([nn.Conv2d(1, 1, 1), nn.MaxPool2d(3)], nn.SquaredError()).output_shape(
            (2, 1, 2, 2)
        )


# -- model construction ----------------------------------------------------------------------------


def test_invalid_model_construction():
    with pytest.raises(TypeError, match="layers must be a list of kfqn_ref.nn layers"):
        nn.Sequential([nn.Dense(2, 2), "relu"], nn.SquaredError())
    with pytest.raises(TypeError, match="loss must be a kfqn_ref.nn loss"):
        nn.Sequential([nn.Dense(2, 2)], "mse")
    with pytest.raises(ValueError, match="at least one trainable layer"):
        nn.Sequential([nn.ReLU()], nn.SquaredError())
    with pytest.raises(TypeError, match="dtype must be float64 or float32, got int32"):
        nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), dtype=np.int32)
    with pytest.raises(TypeError, match="dtype must be float64 or float32, got float16"):
        nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), dtype=np.float16)
    with pytest.raises(TypeError, match="seed must be an int >= 0 or a numpy.random.Generator"):
        nn.Sequential([nn.Dense(2, 2)], nn.SquaredError(), seed=-1)


# -- shapes ----------------------------------------------------------------------------------------


def test_wrong_input_shape_names_layer_expected_and_received():
    model = _conv_model()
    with pytest.raises(
        ValueError,
        match=r"Conv2d \(layers\[0\]\) expected input of shape \(N, 1, H, W\), got \(8, 4, 5, 5\)",
    ):
        model.forward(np.ones((8, 4, 5, 5)))
    with pytest.raises(
        ValueError,
        match=r"Conv2d \(layers\[0\]\) expected input of shape \(N, 1, H, W\), got \(8, 25\)",
    ):
        model.forward_backward(np.ones((8, 25)), np.zeros(8, dtype=int))
    # A mismatch deeper in the net is reported at the layer where it occurs.
    with pytest.raises(
        ValueError, match=r"Dense \(layers\[4\]\) expected input of shape \(N, 18\), got \(2, 32\)"
    ):
        model.forward_pass(np.ones((2, 1, 6, 6)))


def test_empty_minibatch():
    with pytest.raises(ValueError, match="X must hold at least one sample"):
        _mlp().forward(np.ones((0, 3)))


def test_wrong_target_shapes():
    with pytest.raises(
        ValueError,
        match=r"SquaredError targets t must have the shape of the output z, \(5, 2\), got \(5, 3\)",
    ):
        _mlp().forward_backward(X_MLP, np.zeros((5, 3)))
    with pytest.raises(
        ValueError, match=r"class-index targets t must have shape \(N,\) = \(5,\), got \(5, 1\)"
    ):
        _mlp(nn.SoftmaxCrossEntropy()).forward_backward(X_MLP, np.zeros((5, 1), dtype=int))


def test_loss_needs_a_matrix_output():
    model = nn.Sequential([nn.Conv2d(1, 2, 2)], nn.SquaredError())
    with pytest.raises(
        ValueError, match=r"SquaredError expects network outputs z of shape \(N, d\)"
    ):
        model.forward_backward(np.ones((2, 1, 3, 3)), np.zeros((2, 2, 2, 2)))


def test_output_gradients_shape_and_flags():
    model = _mlp()
    forward_pass = model.forward_pass(X_MLP)
    with pytest.raises(
        ValueError, match=r"output_gradients must have the shape of the output, \(5, 2\)"
    ):
        model.backward_pass(forward_pass, np.ones((5, 3)))
    with pytest.raises(TypeError, match="weight_gradients must be True or False"):
        model.backward_pass(forward_pass, np.ones((5, 2)), weight_gradients=1)
    with pytest.raises(TypeError, match="forward_pass must be the ForwardPass"):
        model.backward_pass(X_MLP, np.ones((5, 2)))


def test_col2im_rejects_a_wrong_column_shape():
    cols = im2col(np.ones((2, 1, 4, 4)), 3)
    with pytest.raises(ValueError, match=r"col2im: cols must have shape \(2, 4, 9\)"):
        col2im(cols[:, :3], (2, 1, 4, 4), 3)


# -- dtypes ----------------------------------------------------------------------------------------


def test_dtype_errors():
    model = _mlp()
    with pytest.raises(TypeError, match="X has dtype float32 but float64 was expected"):
        model.forward(X_MLP.astype(np.float32))
    with pytest.raises(TypeError, match="X must have dtype float64 or float32, got int64"):
        model.forward(np.ones((5, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="X must be an array of float64 or float32, got list"):
        model.forward([[1.0, 2.0, 3.0]])
    with pytest.raises(
        TypeError, match="SquaredError targets t has dtype float32 but float64 was expected"
    ):
        model.forward_backward(X_MLP, T_MLP.astype(np.float32))
    with pytest.raises(
        TypeError, match="SquaredError targets t must have dtype float64 or float32, got int64"
    ):
        model.forward_backward(X_MLP, np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(
        TypeError, match="output_gradients has dtype float32 but float64 was expected"
    ):
        model.backward_pass(model.forward_pass(X_MLP), np.ones((5, 2), dtype=np.float32))


def test_softmax_targets_of_an_unsupported_kind():
    model = _mlp(nn.SoftmaxCrossEntropy())
    with pytest.raises(TypeError, match=r"integer array of class indices \(N,\) or a float array"):
        model.forward_backward(X_MLP, np.zeros(5, dtype=bool))
    with pytest.raises(TypeError, match="got list"):
        model.forward_backward(X_MLP, [0, 1, 0, 1, 0])


# -- non-finite values -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_targets_weights_and_gradients(bad):
    model = _mlp()
    X = X_MLP.copy()
    X[1, 2] = bad
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        model.forward_backward(X, T_MLP)
    T = T_MLP.copy()
    T[0, 0] = bad
    with pytest.raises(ValueError, match="SquaredError targets t contains NaN or Inf"):
        model.forward_backward(X_MLP, T)
    weights = model.weights()
    weights[1][0, 0] = bad
    with pytest.raises(
        ValueError, match=r"weights\[1\] for Dense \(layers\[2\]\) contains NaN or Inf"
    ):
        model.set_weights(weights)
    dz = np.ones((5, 2))
    dz[0, 1] = bad
    with pytest.raises(ValueError, match="output_gradients contains NaN or Inf"):
        model.backward_pass(model.forward_pass(X_MLP), dz)


@pytest.mark.parametrize("run_pass", ["forward", "forward_pass", "forward_backward"])
def test_overflowing_network_output_raises_non_finite_error(run_pass):
    """Finite inputs and weights whose product overflows: every pass names the output."""
    model = _mlp()
    weights = model.weights()
    weights[1][:] = np.finfo(np.float64).max
    model.set_weights(weights)
    arguments = (X_MLP, T_MLP) if run_pass == "forward_backward" else (X_MLP,)
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteError, match="network output z is not finite"),
    ):
        getattr(model, run_pass)(*arguments)


def test_loss_given_a_non_finite_output_names_it():
    z = np.array([[0.0, np.inf, 1.0]])
    with pytest.raises(ValueError, match="network output z contains NaN or Inf"):
        nn.SquaredError().value(z, np.zeros_like(z))


# -- targets outside a loss's domain ---------------------------------------------------------------


def test_targets_outside_the_domain():
    z = np.zeros((3, 4))
    with pytest.raises(
        ValueError,
        match=r"SigmoidCrossEntropy targets t must lie in \[0, 1\], got values in \[0.0, 1.5\]",
    ):
        nn.SigmoidCrossEntropy().value(z, np.array([[0.0, 1.5, 0.5, 1.0]] * 3))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got values in \[-0.1"):
        nn.SigmoidCrossEntropy().output_gradient(z, np.full((3, 4), -0.1))
    with pytest.raises(
        ValueError,
        match=r"class indices must lie in \[0, 3\] for 4 classes, got values in \[0, 4\]",
    ):
        nn.SoftmaxCrossEntropy().value(z, np.array([0, 4, 1]))
    with pytest.raises(
        ValueError,
        match=r"class indices must lie in \[0, 3\] for 4 classes, got values in \[-1, 1\]",
    ):
        nn.SoftmaxCrossEntropy().output_hessian(z, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="rows summing to 1"):
        nn.SoftmaxCrossEntropy().value(z, np.full((3, 4), 0.3))
    with pytest.raises(ValueError, match=r"entries in \[0, 1\]"):
        nn.SoftmaxCrossEntropy().value(z, np.array([[1.5, -0.5, 0.0, 0.0]] * 3))


def test_sampling_needs_an_explicit_generator():
    for loss in (nn.SquaredError(), nn.SigmoidCrossEntropy(), nn.SoftmaxCrossEntropy()):
        with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
            loss.sample_targets(np.zeros((2, 3)), 0)


# -- set_weights: no partial update ----------------------------------------------------------------


def test_set_weights_rejects_without_changing_anything():
    model = _mlp()
    before = model.weights()
    good, bad = model.weights()[0] + 1.0, np.ones((2, 4))
    with pytest.raises(
        ValueError,
        match=r"weights\[1\] for Dense \(layers\[2\]\) must have shape \(2, 5\) "
        r"\(homogeneous \[W \| b\]\), got \(2, 4\)",
    ):
        model.set_weights([good, bad])
    with pytest.raises(ValueError, match="weights must be a list of 2 homogeneous matrices"):
        model.set_weights([good])
    with pytest.raises(TypeError, match="weights must be a list of 2 homogeneous matrices"):
        model.set_weights(good)
    with pytest.raises(
        TypeError, match=r"weights\[1\] for Dense \(layers\[2\]\) has dtype float32"
    ):
        model.set_weights([good, before[1].astype(np.float32)])
    for got, want in zip(model.weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


# -- backward_pass given another model's forward pass ----------------------------------------------


def test_backward_pass_rejects_a_forward_pass_of_another_structure():
    model = _mlp()
    fewer_layers = nn.Sequential([nn.Dense(3, 2)], nn.SquaredError()).forward_pass(X_MLP)
    with pytest.raises(
        ValueError, match="forward_pass comes from a model with 1 layers; this model has 3"
    ):
        model.backward_pass(fewer_layers, np.ones((5, 2)))
    other_activation = nn.Sequential(
        [nn.Dense(3, 4), nn.ReLU(), nn.Dense(4, 2)], nn.SquaredError()
    ).forward_pass(X_MLP)
    with pytest.raises(
        ValueError,
        match=r"different structure: layers\[1\] is ReLU\(\) there but Tanh\(\) in this model",
    ):
        model.backward_pass(other_activation, np.ones((5, 2)))


def test_backward_pass_accepts_a_forward_pass_of_an_equal_structure():
    # Layers hold no state: a twin built from equal (not identical) layers gives the same records.
    model, twin = _mlp(), _mlp()
    dz = np.ones((5, 2))
    got = model.backward_pass(twin.forward_pass(X_MLP), dz)
    want = model.backward_pass(model.forward_pass(X_MLP), dz)
    for got_record, want_record in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_record.grad, want_record.grad)


# -- layers called directly ------------------------------------------------------------------------
# Shape and dtype checks are O(1) and run on every direct forward; entries are not read there
# (Sequential checks X for NaN/Inf once per pass). The public im2col/col2im check finiteness too.
# Layers hold no state, so a rejected call changes nothing.

DENSE_WEIGHT = np.ones((2, 4))
CONV_WEIGHT = np.ones((3, 2 * 2 * 2 + 1))

BAD_LAYER_CALLS = [
    (
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, np.ones((5, 4))),
        ValueError,
        r"Dense expected input of shape (N, 3), got (5, 4)",
    ),
    (
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, np.ones(3)),
        ValueError,
        r"Dense expected input of shape (N, 3), got (3,)",
    ),
    (
        lambda: nn.Dense(3, 2).forward(np.ones((2, 3)), np.ones((5, 3))),
        ValueError,
        r"Dense: weight must have shape (2, 4) (homogeneous [W | b]), got (2, 3)",
    ),
    (
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT.astype(np.float32), np.ones((5, 3))),
        TypeError,
        "Dense: weight has dtype float32 but input x has dtype float64 (mixed dtypes",
    ),
    (
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, np.ones((5, 3), dtype=np.int64)),
        TypeError,
        "Dense: input x must have dtype float64 or float32, got int64",
    ),
    (
        lambda: nn.Dense(3, 2).forward(DENSE_WEIGHT, [[1.0, 2.0, 3.0]]),
        TypeError,
        "Dense: input x must be an array of float64 or float32, got list",
    ),
    (
        lambda: nn.Conv2d(2, 3, 2).forward(CONV_WEIGHT, np.ones((1, 1, 4, 4))),
        ValueError,
        r"Conv2d expected input of shape (N, 2, H, W), got (1, 1, 4, 4)",
    ),
    (
        lambda: nn.Conv2d(2, 3, 2).forward(CONV_WEIGHT, np.ones((2, 4, 4))),
        ValueError,
        r"Conv2d expected input of shape (N, 2, H, W), got (2, 4, 4)",
    ),
    (
        lambda: nn.Conv2d(2, 3, 2).forward(CONV_WEIGHT[:, :-1], np.ones((1, 2, 4, 4))),
        ValueError,
        r"Conv2d: weight must have shape (3, 9) (homogeneous [W | b]), got (3, 8)",
    ),
    (
        lambda: nn.MaxPool2d(2).forward(np.ones((1, 4, 4))),
        ValueError,
        r"MaxPool2d expected input of shape (N, C, H, W), got (1, 4, 4)",
    ),
    (
        lambda: nn.AvgPool2d(2).forward(np.ones((4, 4))),
        ValueError,
        r"AvgPool2d expected input of shape (N, C, H, W), got (4, 4)",
    ),
    (
        lambda: nn.Flatten().forward(np.ones(4)),
        ValueError,
        r"Flatten expected input of shape (N, ...) with at least 2 dimensions, got (4,)",
    ),
    (
        lambda: nn.ReLU().forward(np.ones(3, dtype=np.int32)),
        TypeError,
        "ReLU: input x must have dtype float64 or float32, got int32",
    ),
    (
        lambda: im2col(np.ones((2, 3)), 2),
        ValueError,
        r"im2col: x must have 4 dimensions, got shape (2, 3)",
    ),
    (
        lambda: im2col(np.ones((1, 1, 3, 3), dtype=np.int64), 2),
        TypeError,
        "im2col: x must have dtype float64 or float32, got int64",
    ),
    (
        lambda: im2col(np.full((1, 1, 3, 3), np.nan), 2),
        ValueError,
        "im2col: x contains NaN or Inf",
    ),
    (
        lambda: col2im(np.ones((1, 1, 9)), (1, 1, 3), 3),
        ValueError,
        r"col2im: input_shape must be a shape (N, C, H, W) of 4 ints >= 1, got (1, 1, 3)",
    ),
    (
        lambda: col2im(np.ones((1, 1, 9)), (1, 1, 3.0, 3), 3),
        ValueError,
        r"col2im: input_shape must be a shape (N, C, H, W) of 4 ints >= 1, got (1, 1, 3.0, 3)",
    ),
    (
        lambda: col2im(np.full((1, 1, 9), np.inf), (1, 1, 3, 3), 3),
        ValueError,
        "col2im: cols contains NaN or Inf",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), BAD_LAYER_CALLS, ids=[m for _, _, m in BAD_LAYER_CALLS]
)
def test_direct_layer_calls_name_the_layer_the_expected_and_the_received_form(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()
