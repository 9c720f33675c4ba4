"""Kronecker factors as KFAC/KFC and K-BFGS estimate them (hessian-structure.md, eqs. 11-17).

Expected values: explicit loops over samples and positions (the definitions of the reductions);
autograd GGN/Hessian blocks and per-sample gradients (``kfqn_ref.curvature.hessian``, autograd);
dense ``A @ s`` products; the type-2 factor as the statistical mean of Monte-Carlo factors.
"""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfqn_ref import nn
from kfqn_ref.curvature import hessian
from kfqn_ref.curvature.factors import (
    FisherType,
    as_positions,
    input_factor,
    kbfgs_input_factor,
    kbfgs_minibatch_action,
    kfac_factors,
    kfac_factors_of_records,
    output_factor,
)
from kfqn_ref.curvature.kronecker import vec
from tests.curvature.nets import (
    ACTIVATIONS,
    LOSSES,
    Case,
    build_case,
    conv_cases,
    dense_cases,
    seeds,
    sizes,
)
from tests.helpers.compare import assert_close

#: Standard errors allowed between the mean of the Monte-Carlo factors and the type-2 factor.
MONTE_CARLO_STANDARD_ERRORS = 6.0

records_shapes = st.tuples(
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=4),
)


def _second_moment_by_loop(x, position_average):
    """(1/N) sum_n sum_p x_np x_np^T (/P), by explicit loops."""
    n_samples, n_positions, width = x.shape
    moment = np.zeros((width, width))
    for n in range(n_samples):
        for p in range(n_positions):
            moment += np.outer(x[n, p], x[n, p])
    return moment / n_samples / (n_positions if position_average else 1)


@given(records_shapes, st.booleans(), seeds)
def test_factor_reductions_match_their_definitions(shape, position_average, seed):
    """eq. 11, 14, 16: conv (N, P, d) arrays reduce by sum (or mean) over positions and mean over
    samples; a dense (N, d) array is the P = 1 case."""
    x = np.random.default_rng(seed).standard_normal(shape)
    expected = _second_moment_by_loop(x, position_average)
    for reduce in (input_factor, output_factor, kbfgs_input_factor):
        assert_close(reduce(x, position_average=position_average), expected, what=reduce.__name__)
        assert_close(
            reduce(x[:, 0, :], position_average=position_average),
            _second_moment_by_loop(x[:, :1, :], False),
            what=f"{reduce.__name__}, dense",
        )


class _Record:
    """A stand-in record: only ``a`` (input side) or ``g`` (output side) is read."""

    def __init__(self, a=None, g=None):
        self.a, self.g = a, g


@given(records_shapes, st.integers(min_value=1, max_value=3), st.booleans(), seeds)
def test_kfac_factors_of_records_matches_the_definitions(shape, sets, conv, seed):
    """The core of kfac_factors (eq. 11, 14): A = (1/N) sum_n sum_p a a^T of the input records and
    G = sum over the sets of (1/(N P)) sum_n sum_p g g^T, each by explicit loops."""
    rng = np.random.default_rng(seed)
    n_samples, n_positions, width = shape
    a = rng.standard_normal(shape)
    gs = [rng.standard_normal((n_samples, n_positions, width + 1)) for _ in range(sets)]
    if not conv:  # dense records: (N, d), P = 1
        a, gs = a[:, 0, :], [g[:, 0, :] for g in gs]
    (factor,) = kfac_factors_of_records([_Record(a=a)], [[_Record(g=g)] for g in gs])
    positions = as_positions("a", a)
    assert_close(factor.A, _second_moment_by_loop(positions, False), what="A of the records")
    expected_G = sum(_second_moment_by_loop(as_positions("g", g), True) for g in gs)
    assert_close(factor.G, expected_G, what="G summed over the sets")


@given(records_shapes, st.booleans(), seeds)
def test_kbfgs_minibatch_action_equals_the_formed_factor(shape, position_average, seed):
    """eq. 17: A_B s by matrix-vector products equals the loop-formed A_B times s."""
    rng = np.random.default_rng(seed)
    a, s = rng.standard_normal(shape), rng.standard_normal(shape[2])
    A = _second_moment_by_loop(a, position_average)
    assert_close(
        kbfgs_minibatch_action(a, s, position_average=position_average),
        A @ s,
        what="minibatch action, conv",
    )
    assert_close(
        kbfgs_minibatch_action(a[:, 0, :], s),
        _second_moment_by_loop(a[:, :1], False) @ s,
        what="minibatch action, dense",
    )


def _kfac_blocks(case, fisher, rng=None):
    factors = kfac_factors(case.model, case.model.forward_pass(case.X), case.T, fisher, rng=rng)
    return [np.kron(f.A, f.G) for f in factors]


@given(dense_cases(batch_sizes=st.just(1)))
def test_type2_kfac_equals_the_ggn_for_a_single_sample(case):
    """eq. 13, N = 1: A kron G (type-2) is the exact GGN block (autograd) of every dense layer."""
    blocks = _kfac_blocks(case, FisherType.TYPE2)
    for layer, block in zip(case.model.trainable_indices, blocks, strict=True):
        assert_close(
            block,
            hessian.layer_ggn(case.model, case.X, case.T, layer),
            what=f"type-2 KFAC vs GGN block of layer {layer}, N = 1",
        )


@given(dense_cases(linear=True, loss=nn.SquaredError(), batch_sizes=st.integers(1, 4)))
def test_type2_kfac_equals_the_ggn_and_hessian_on_deep_linear_nets(case):
    """eq. 13, deep linear nets with squared error, any N: Q_n = J^T J is the same for every sample,
    so A kron G is the exact GGN block, which is also the Hessian block (z is linear in W~)."""
    blocks = _kfac_blocks(case, FisherType.TYPE2)
    for layer, block in zip(case.model.trainable_indices, blocks, strict=True):
        ggn = hessian.layer_ggn(case.model, case.X, case.T, layer)
        assert_close(block, ggn, what=f"type-2 KFAC vs GGN block of layer {layer}")
        assert_close(
            hessian.layer_hessian(case.model, case.X, case.T, layer),
            ggn,
            what=f"Hessian vs GGN block of linear layer {layer}",
        )


@settings(max_examples=15)
@given(st.one_of(dense_cases(), conv_cases()))
def test_type2_output_factor_is_the_position_mean_of_the_preactivation_ggn(case):
    """eq. 12, 14: the type-2 G is (1/(N P)) sum_n sum_p Q_n[p, p], the diagonal position blocks of
    the per-sample pre-activation GGN (autograd); A is input_factor of the record (sum over p)."""
    factors = kfac_factors(case.model, case.model.forward_pass(case.X), case.T, FisherType.TYPE2)
    records = case.model.forward_backward(case.X, case.T).records
    for record, factor in zip(records, factors, strict=True):
        ggns = hessian.preactivation_ggns(case.model, case.X, case.T, record.layer_index)
        n_samples, n_positions, _ = as_positions("a", record.a).shape
        c_out = ggns.shape[1] // n_positions
        blocks = ggns.reshape(n_samples, n_positions, c_out, n_positions, c_out)
        expected_G = np.einsum("npcpd->cd", blocks) / (n_samples * n_positions)
        assert_close(factor.G, expected_G, what=f"type-2 G of layer {record.layer_index}")
        assert_close(factor.A, input_factor(record.a), what=f"A of layer {record.layer_index}")


def _per_sample_weight_gradients(case, layer, targets):
    """vec(d l_n / d W~) of every sample (autograd, one sample at a time), (N, P_l)."""
    position = case.model.trainable_indices.index(layer)
    weights = case.model.weights()

    def sample_loss(w, n):
        replaced = weights[:position] + [w] + weights[position + 1 :]
        return case.model.loss_function(replaced, case.X[n : n + 1], targets[n : n + 1], anp)

    return np.stack(
        [vec(autograd.grad(sample_loss)(weights[position], n)) for n in range(len(case.X))]
    )


@given(dense_cases(batch_sizes=st.just(1)))
def test_empirical_kfac_equals_the_empirical_fisher_for_a_single_sample(case):
    """eq. 11-12, N = 1: A kron G (empirical) = vec(grad l) vec(grad l)^T, grad l by autograd."""
    blocks = _kfac_blocks(case, FisherType.EMPIRICAL)
    for layer, block in zip(case.model.trainable_indices, blocks, strict=True):
        gradient = _per_sample_weight_gradients(case, layer, case.T)[0]
        assert_close(block, np.outer(gradient, gradient), what=f"empirical KFAC of layer {layer}")


@given(dense_cases(batch_sizes=st.just(1)), seeds)
def test_monte_carlo_kfac_matches_autograd_at_the_drawn_targets(case, seed):
    """eq. 12, N = 1: with targets drawn by loss.sample_targets from the same seed, A kron G (MC) is
    the outer product of the autograd gradient at those targets; same seed, same bits."""
    drawn = case.model.loss.sample_targets(case.model.forward(case.X), np.random.default_rng(seed))
    blocks = _kfac_blocks(case, FisherType.MONTE_CARLO, rng=np.random.default_rng(seed))
    again = _kfac_blocks(case, FisherType.MONTE_CARLO, rng=seed)
    for layer, block, repeated in zip(case.model.trainable_indices, blocks, again, strict=True):
        gradient = _per_sample_weight_gradients(case, layer, drawn)[0]
        assert_close(block, np.outer(gradient, gradient), what=f"Monte-Carlo KFAC of layer {layer}")
        np.testing.assert_array_equal(repeated, block)


@pytest.mark.parametrize("loss", LOSSES)
def test_monte_carlo_kfac_averages_to_type2(loss):
    """eq. 12: E[dl/dz dl/dz^T] = d2l/dz2 for these losses, so the MC G is an unbiased estimate of
    the type-2 G. Each of 40 replicates draws targets for 200 copies of a 3-sample minibatch; the
    mean over replicates must lie within 6 standard errors (estimated from the replicates) of the
    type-2 G, entry by entry. Deterministic: fixed seeds."""
    case = build_case([nn.Dense(3, 4), nn.Tanh(), nn.Dense(4, 3)], loss(), (3, 3), seed=7)
    copies, replicates = 200, 40
    tiled = Case(
        case.model, np.tile(case.X, (copies, 1)), np.tile(case.T, (copies,) + case.T.shape[1:])
    )
    forward = tiled.model.forward_pass(tiled.X)
    rng = np.random.default_rng(11)
    draws = [
        kfac_factors(tiled.model, forward, tiled.T, FisherType.MONTE_CARLO, rng)
        for _ in range(replicates)
    ]
    expected = kfac_factors(case.model, case.model.forward_pass(case.X), case.T, FisherType.TYPE2)
    for k, factor in enumerate(expected):
        samples = np.stack([draw[k].G for draw in draws])
        standard_error = samples.std(axis=0, ddof=1) / np.sqrt(replicates)
        deviation = np.abs(samples.mean(axis=0) - factor.G)
        assert np.all(deviation <= MONTE_CARLO_STANDARD_ERRORS * standard_error), (
            deviation,
            standard_error,
        )
        assert_close(draws[0][k].A, factor.A, what="A does not depend on the Fisher type")


@given(
    sizes,
    sizes,
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=2),
    st.sampled_from(ACTIVATIONS),
    st.sampled_from(LOSSES),
    seeds,
)
def test_kfc_with_one_position_equals_dense_kfac(
    c_in, c_out, size, n_samples, activation, loss, seed
):
    """eq. 14 with P = 1 is eq. 11: a conv layer whose kernel covers its input has the factors of
    the dense layer on the flattened image, for every Fisher type (MC: same seed); with N = 1 the
    type-2 product is the exact GGN block (autograd)."""
    conv = build_case(
        [nn.Conv2d(c_in, c_out, size), activation(), nn.Flatten(), nn.Dense(c_out, 3)],
        loss(),
        (n_samples, c_in, size, size),
        seed,
    )
    dense_model = nn.Sequential(
        [nn.Dense(c_in * size**2, c_out), activation(), nn.Dense(c_out, 3)], loss()
    )
    dense_model.set_weights(conv.model.weights())
    dense = Case(dense_model, conv.X.reshape(n_samples, -1), conv.T)
    for fisher in FisherType:
        for got, expected in zip(
            _kfac_blocks(conv, fisher, rng=seed), _kfac_blocks(dense, fisher, rng=seed), strict=True
        ):
            assert_close(got, expected, what=f"{fisher.value} KFC (P = 1) vs dense KFAC")
    single = Case(conv.model, conv.X[:1], conv.T[:1])
    assert_close(
        _kfac_blocks(single, FisherType.TYPE2)[0],
        hessian.layer_ggn(*single, 0),
        what="type-2 KFC (P = 1, N = 1) vs GGN block",
    )
