"""Loss, gradients and records (a~, h, g) of mixed networks against autograd on an independent
functional forward (``tests/nn/reference.py``), float64, 1e-10 relative."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from helpers.compare import assert_close

from kfqn_ref import nn
from tests.nn.cases import NETS, TARGETS, build
from tests.nn.reference import (
    image_to_record,
    naive_patches,
    reference_loss,
    reference_output,
    reference_preactivations,
)

CASES = [(net, targets) for net in NETS for targets in TARGETS]
IDS = [f"{net.__name__}-{targets.__name__}" for net, targets in CASES]


def _to_record(y):
    """Reference pre-activation layout -> record layout (dense unchanged, conv (N, P, C))."""
    return image_to_record(y) if y.ndim == 4 else y


@pytest.mark.parametrize(("net", "targets"), CASES, ids=IDS)
def test_loss_and_weight_gradients_match_autograd(net, targets):
    # Expected: autograd's gradient of the reference loss (offset-sum conv, textbook formulas).
    model, X, T = build(net, targets)
    weights = model.weights()
    result = model.forward_backward(X, T)
    assert_close(result.loss, reference_loss(model, weights, X, T), what="mean loss")
    assert_close(result.output, reference_output(model.layers, weights, X), what="output z")
    expected = grad(lambda w: reference_loss(model, w, X, T))(weights)
    for record, grad_w, want in zip(result.records, result.grads, expected, strict=True):
        assert_close(grad_w, want, what=f"df/dW~ of layers[{record.layer_index}]")


@pytest.mark.parametrize(("net", "targets"), CASES, ids=IDS)
def test_records_h_and_g_match_autograd(net, targets):
    # Expected h: the reference forward's pre-activations; expected g = N * df/dh, with df/dh from
    # autograd as the gradient w.r.t. an additive offset on each pre-activation, at offset 0.
    model, X, T = build(net, targets)
    weights = model.weights()
    result = model.forward_backward(X, T)
    hs = reference_preactivations(model.layers, weights, X)
    zeros = [np.zeros_like(h) for h in hs]
    df_dh = grad(lambda d: reference_loss(model, weights, X, T, deltas=d))(zeros)
    n = X.shape[0]
    for record, h, dh in zip(result.records, hs, df_dh, strict=True):
        where = f"layers[{record.layer_index}]"
        assert_close(record.h, _to_record(h), what=f"h of {where}")
        assert_close(record.g, n * _to_record(dh), what=f"g of {where}")


@pytest.mark.parametrize("net", NETS, ids=[net.__name__ for net in NETS])
def test_records_a_are_homogeneous_inputs(net):
    # Expected: the layer input of the reference forward, [x, 1] (dense) or the nested-loop patches
    # with a trailing 1 (conv); no 1 without bias.
    model, X, T = build(net, TARGETS[0])
    weights = model.weights()
    result = model.forward_backward(X, T)
    for j, record in enumerate(result.records):
        layer = model.layers[record.layer_index]
        x = reference_output(model.layers[: record.layer_index], weights[:j], X)
        if isinstance(layer, nn.Conv2d):
            x = naive_patches(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        expected = (
            np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1) if layer.has_bias else x
        )
        assert_close(record.a, expected, what=f"a~ of layers[{record.layer_index}]")


def test_gradient_w_r_t_weights_matches_autograd_of_the_models_own_functional_form():
    # Expected: autograd through Sequential.loss_function (the functional form other modules use)
    # equals the hand-written backward; the first test ties both to the independent reference.
    model, X, T = build(NETS[1], TARGETS[2])
    expected = grad(lambda w: model.loss_function(w, X, T, anp))(model.weights())
    for got, want in zip(model.forward_backward(X, T).grads, expected, strict=True):
        assert_close(got, want, what="df/dW~ via loss_function")
