"""Sequential: weights round trip, seeded initialisation, pure passes, records, dtypes."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from helpers.compare import assert_close

from kfqn_ref import nn
from tests.nn.cases import (
    NETS,
    TARGETS,
    build,
    cnn_strides_paddings_dilation_pooling,
    mlp_all_activations,
)


def _model(seed=0, dtype=np.float64):
    layers, _ = cnn_strides_paddings_dilation_pooling()
    return nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=seed, dtype=dtype)


def _assert_records_equal(first, second):
    for r1, r2 in zip(first, second, strict=True):
        assert r1.layer_index == r2.layer_index
        for field in ("a", "h", "g", "grad"):
            np.testing.assert_array_equal(getattr(r1, field), getattr(r2, field), err_msg=field)


# -- weights and initialisation ------------------------------------------------------------------


def test_weights_round_trip_and_are_copies():
    model, other = _model(seed=0), _model(seed=1)
    weights = other.weights()
    model.set_weights(weights)
    for got, want in zip(model.weights(), other.weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    weights[0][...] = 0.0  # the caller's arrays are not the model's
    model.weights()[1][...] = 0.0  # nor are the returned copies
    for got, want in zip(model.weights(), other.weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_have_homogeneous_shapes():
    model = _model()
    shapes = [w.shape for w in model.weights()]
    assert shapes == [(3, 2 * 9 + 1), (4, 3 * 6 + 1), (2, 4), (5, 17), (3, 6)]
    assert shapes == [model.layers[i].weight_shape for i in model.trainable_indices]


def test_same_seed_same_bits_other_seed_other_bits():
    for w1, w2, w3 in zip(
        _model(5).weights(), _model(5).weights(), _model(6).weights(), strict=True
    ):
        np.testing.assert_array_equal(w1, w2)
        assert not np.array_equal(w1, w3)


def test_initialisation_is_the_documented_draw():
    # Expected: one PCG64(seed) generator, per trainable layer in order one float64
    # uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) draw of the whole homogeneous matrix.
    model = _model(seed=3)
    rng = np.random.Generator(np.random.PCG64(3))
    fan_ins = [2 * 9, 3 * 6, 4, 16, 5]
    for w, fan_in in zip(model.weights(), fan_ins, strict=True):
        bound = 1.0 / np.sqrt(fan_in)
        np.testing.assert_array_equal(w, rng.uniform(-bound, bound, size=w.shape))
        assert np.all(np.abs(w) <= bound)


def test_float32_model_rounds_the_float64_draw():
    for w32, w64 in zip(_model(2, np.float32).weights(), _model(2).weights(), strict=True):
        assert w32.dtype == np.float32
        np.testing.assert_array_equal(w32, w64.astype(np.float32))


def test_generator_seed_is_used_as_given():
    model = nn.Sequential([nn.Dense(3, 2)], nn.SquaredError(), seed=np.random.default_rng(9))
    np.testing.assert_array_equal(
        model.weights()[0], nn.Sequential([nn.Dense(3, 2)], nn.SquaredError(), seed=9).weights()[0]
    )


# -- passes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", NETS, ids=[net.__name__ for net in NETS])
def test_record_shapes_follow_conventions(net):
    model, X, T = build(net, TARGETS[2])
    n = X.shape[0]
    records = model.forward_backward(X, T).records
    assert [r.layer_index for r in records] == list(model.trainable_indices)
    for record in records:
        layer = model.layers[record.layer_index]
        assert record.grad.shape == layer.weight_shape
        if isinstance(layer, nn.Conv2d):
            positions = record.a.shape[1]
            assert record.a.shape == (n, positions, layer.weight_shape[1])
            assert record.h.shape == record.g.shape == (n, positions, layer.c_out)
        else:
            assert record.a.shape == (n, layer.weight_shape[1])
            assert record.h.shape == record.g.shape == (n, layer.d_out)


def test_backward_twice_gives_the_same_result():
    model, X, T = build(NETS[1], TARGETS[2])
    _assert_records_equal(
        model.forward_backward(X, T).records, model.forward_backward(X, T).records
    )
    forward_pass = model.forward_pass(X)
    dz = model.loss.output_gradient(forward_pass.z, T)
    _assert_records_equal(
        model.backward_pass(forward_pass, dz), model.backward_pass(forward_pass, dz)
    )


def test_without_weight_gradients_records_are_the_same_but_grad():
    model, X, T = build(NETS[1], TARGETS[0])
    full = model.forward_backward(X, T)
    light = model.forward_backward(X, T, weight_gradients=False)
    assert light.loss == full.loss
    assert all(grad_w is None for grad_w in light.grads)
    for r_full, r_light in zip(full.records, light.records, strict=True):
        for field in ("a", "h", "g"):
            np.testing.assert_array_equal(getattr(r_light, field), getattr(r_full, field))


def test_backward_pass_of_any_output_gradient_is_the_vjp():
    # Expected: autograd's VJP of output_function with cotangent V, divided by N (grad's 1/N).
    model, X, _ = build(NETS[1], TARGETS[0])
    forward_pass = model.forward_pass(X)
    v = np.random.default_rng(1).standard_normal(forward_pass.z.shape)
    expected = grad(lambda w: anp.sum(v * model.output_function(w, X, anp)))(model.weights())
    records = model.backward_pass(forward_pass, v)
    for record, want in zip(records, expected, strict=True):
        assert_close(record.grad, want / X.shape[0], what=f"VJP of layers[{record.layer_index}]")


def test_backward_pass_uses_the_weights_of_its_forward_pass():
    model, X, T = build(NETS[0], TARGETS[1])
    forward_pass = model.forward_pass(X)
    dz = model.loss.output_gradient(forward_pass.z, T)
    before = model.backward_pass(forward_pass, dz)
    model.set_weights([2.0 * w for w in model.weights()])
    _assert_records_equal(model.backward_pass(forward_pass, dz), before)


def test_forward_forms_agree():
    # forward (layer apply chain), forward_pass (layer forward with caches) and output_function
    # run the same arithmetic: bitwise equal. loss value equals loss_function.
    model, X, T = build(NETS[1], TARGETS[3])
    z = model.forward(X)
    np.testing.assert_array_equal(model.forward_pass(X).z, z)
    np.testing.assert_array_equal(model.output_function(model.weights(), X, np), z)
    assert model.forward_backward(X, T).loss == float(
        model.loss_function(model.weights(), X, T, np)
    )


def test_forward_pass_records_hold_a_and_h_of_the_full_pass():
    model, X, T = build(NETS[1], TARGETS[0])
    full = model.forward_backward(X, T).records
    partial = model.forward_pass(X).records
    for r_partial, r_full in zip(partial, full, strict=True):
        assert r_partial.layer_index == r_full.layer_index
        assert r_partial.g is None and r_partial.grad is None
        np.testing.assert_array_equal(r_partial.a, r_full.a)
        np.testing.assert_array_equal(r_partial.h, r_full.h)


def test_inputs_are_not_mutated():
    model, X, T = build(NETS[1], TARGETS[2])
    weights = model.weights()
    copies = [X.copy(), T.copy()] + [w.copy() for w in weights]
    model.set_weights(weights)
    forward_pass = model.forward_pass(X)
    dz = model.loss.output_gradient(forward_pass.z, T)
    dz_copy = dz.copy()
    model.forward_backward(X, T)
    model.backward_pass(forward_pass, dz)
    model.loss_function(weights, X, T, anp)
    for got, want in zip([X, T, *weights, dz], [*copies, dz_copy], strict=True):
        np.testing.assert_array_equal(got, want)


def test_float32_model_computes_in_float32():
    layers, input_shape = mlp_all_activations()
    model = nn.Sequential(layers, nn.SigmoidCrossEntropy(), seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    X = rng.standard_normal(input_shape).astype(np.float32)
    T = rng.random((input_shape[0], 3)).astype(np.float32)
    result = model.forward_backward(X, T)
    assert result.output.dtype == np.float32
    for record in result.records:
        assert {record.a.dtype, record.h.dtype, record.g.dtype, record.grad.dtype} == {
            np.dtype(np.float32)
        }


def test_float32_gradients_agree_with_float64_to_float32_precision():
    # Same weights (the float32 ones, exactly representable in float64): the float64 result is the
    # reference; float32 rounding (eps 6e-8) over six small layers stays within 1e-6 relative
    # (about 16 float32 epsilons; observed ~1.3).
    layers, input_shape = mlp_all_activations()
    model32 = nn.Sequential(layers, nn.SquaredError(), seed=0, dtype=np.float32)
    model64 = nn.Sequential(layers, nn.SquaredError(), seed=0)
    model64.set_weights([w.astype(np.float64) for w in model32.weights()])
    rng = np.random.default_rng(0)
    X = rng.standard_normal(input_shape).astype(np.float32)
    T = rng.standard_normal((input_shape[0], 3)).astype(np.float32)
    grads32 = model32.forward_backward(X, T).grads
    grads64 = model64.forward_backward(X.astype(np.float64), T.astype(np.float64)).grads
    for g32, g64 in zip(grads32, grads64, strict=True):
        assert_close(g32, g64, rtol=1e-6, what="float32 gradient")


# -- checks at the edges -------------------------------------------------------------------------


def _count_scans(monkeypatch, run) -> int:
    """Number of full-array ``numpy.isfinite`` calls made while ``run()`` runs."""
    calls = []
    original = np.isfinite

    def counting(x, *args, **kwargs):
        if isinstance(x, np.ndarray) and x.size > 1:
            calls.append(x.shape)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(np, "isfinite", counting)
    run()
    monkeypatch.setattr(np, "isfinite", original)
    return len(calls)


def test_forward_backward_scans_X_z_and_T_once_each(monkeypatch):
    model = _model()
    X = np.random.default_rng(0).standard_normal((4, 2, 9, 8))
    T = np.eye(3)[[0, 1, 2, 1]]  # probability rows: float targets, scanned for NaN/Inf
    assert _count_scans(monkeypatch, lambda: model.forward_backward(X, T)) == 3
    # the unchecked cores scan only the output z, where it is produced
    forward = model.forward_pass_unchecked(X)
    dz = model.loss.output_gradient_unchecked(forward.z, T)
    assert _count_scans(monkeypatch, lambda: model.forward_pass_unchecked(X)) == 1
    assert _count_scans(monkeypatch, lambda: model.backward_pass_unchecked(forward, dz)) == 0
    assert _count_scans(monkeypatch, lambda: model.set_weights_unchecked(model.weights())) == 0


def test_passes_call_the_unchecked_cores_of_the_layers(monkeypatch):
    # The public layer forward re-checks x (O(1)); inside a pass the model has checked X once.
    def refuse(*args, **kwargs):
        raise AssertionError("a pass called a layer's public forward")

    monkeypatch.setattr(nn.Layer, "forward", refuse)
    monkeypatch.setattr(nn.TrainableLayer, "forward", refuse)
    model = _model()
    X = np.random.default_rng(0).standard_normal((4, 2, 9, 8))
    result = model.forward_backward(X, np.array([0, 1, 2, 1]))
    assert len(result.records) == len(model.trainable_indices)


def test_checked_and_unchecked_paths_give_the_same_bits():
    model = _model()
    X = np.random.default_rng(1).standard_normal((4, 2, 9, 8))
    T = np.array([2, 0, 1, 1])
    checked = model.forward_backward(X, T)
    forward = model.forward_pass_unchecked(X)
    loss = model.loss.value_unchecked(forward.z, T)
    records = model.backward_pass_unchecked(
        forward, model.loss.output_gradient_unchecked(forward.z, T)
    )
    assert loss == checked.loss
    _assert_records_equal(records, checked.records)


def test_set_weights_unchecked_keeps_copies():
    model, other = _model(seed=0), _model(seed=1)
    weights = other.weights()
    model.set_weights_unchecked(weights)
    weights[0][...] = 0.0
    for got, want in zip(model.weights(), other.weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_forward_backward_reports_the_weights_it_used_without_copying():
    # The same arrays as the ForwardPass keeps (no copy); later set_weights replaces the model's
    # list and leaves them, so they stay the weights of that pass.
    model = _model()
    X = np.random.default_rng(3).standard_normal((4, 2, 9, 8))
    before = model.weights()
    result = model.forward_backward(X, np.array([0, 1, 2, 1]))
    assert len(result.weights) == len(before)
    for used, expected in zip(result.weights, before, strict=True):
        np.testing.assert_array_equal(used, expected)
    assert all(a is b for a, b in zip(result.weights, model.forward_pass(X).weights, strict=True))
    model.set_weights([w + 1.0 for w in before])
    for used, expected in zip(result.weights, before, strict=True):
        np.testing.assert_array_equal(used, expected)


def test_weight_arrays_are_a_snapshot_and_adopted_arrays_are_not_copied():
    # weight_arrays hands out the model's own arrays; replacing the weights (set_weights or
    # adopt_weights_unchecked) never writes into them, so an earlier tuple keeps the earlier
    # weights (expected: copies taken with weights()). adopt_weights_unchecked keeps the very
    # arrays it is given (an optimizer's fresh new weights).
    model = _model()
    snapshot, expected = model.weight_arrays(), model.weights()
    assert all(a is b for a, b in zip(snapshot, model.weight_arrays(), strict=True))
    new = [w + 1.0 for w in expected]
    model.adopt_weights_unchecked(new)
    assert all(a is b for a, b in zip(model.weight_arrays(), new, strict=True))
    model.set_weights([w + 2.0 for w in expected])
    for kept, want in zip(snapshot, expected, strict=True):
        np.testing.assert_array_equal(kept, want)
    model.adopt_weights_unchecked(snapshot)
    for got, want in zip(model.weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
