"""Losses: values, per-sample gradients and closed-form Hessians against autograd on textbook
formulas (``tests/nn/reference.py``); Hessian square roots; predictive sampling."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, hessian
from helpers.compare import assert_close
from scipy.special import expit, log_expit

from kfqn_ref import nn
from kfqn_ref.nn.layers import sigmoid, sigmoid_pair, softplus
from kfqn_ref.nn.losses import _softmax
from tests.nn.reference import LOSSES

N, K = 5, 4


def _targets(loss, rng, n=N, k=K):
    """Valid targets of every accepted form for ``loss``."""
    if isinstance(loss, nn.SquaredError):
        return [rng.standard_normal((n, k))]
    if isinstance(loss, nn.SigmoidCrossEntropy):
        return [rng.random((n, k)), (rng.random((n, k)) < 0.5).astype(np.float64)]
    probabilities = np.exp(rng.standard_normal((n, k)))
    return [rng.integers(0, k, size=n), probabilities / probabilities.sum(axis=1, keepdims=True)]


LOSS_OBJECTS = [nn.SquaredError(), nn.SigmoidCrossEntropy(), nn.SoftmaxCrossEntropy()]
CASES = [
    (loss, form)
    for loss in LOSS_OBJECTS
    for form in range(len(_targets(loss, np.random.default_rng(0))))
]
IDS = [f"{loss!r}-targets{form}" for loss, form in CASES]


def _case(loss, form, seed=0):
    rng = np.random.default_rng(seed)
    z = 2.0 * rng.standard_normal((N, K))
    return z, _targets(loss, rng)[form]


def _per_sample_loss(loss, t_n):
    """``l(z_n)``: the reference mean loss of a minibatch holding sample ``n`` only."""
    reference = LOSSES[type(loss)]
    return lambda z_n: reference(z_n[None, :], t_n[None, ...])


@pytest.mark.parametrize(("loss", "form"), CASES, ids=IDS)
def test_value_matches_reference_formula(loss, form):
    z, t = _case(loss, form)
    assert_close(loss.value(z, t), LOSSES[type(loss)](z, t), what=f"{loss!r}.value")


@pytest.mark.parametrize(("loss", "form"), CASES, ids=IDS)
def test_output_gradient_is_per_sample_gradient(loss, form):
    # Expected: N * autograd gradient of the reference mean loss (so NOT divided by N).
    z, t = _case(loss, form)
    expected = N * grad(lambda u: LOSSES[type(loss)](u, t))(z)
    assert_close(loss.output_gradient(z, t), expected, what=f"{loss!r}.output_gradient")


@pytest.mark.parametrize(("loss", "form"), CASES, ids=IDS)
def test_output_hessian_matches_autograd_per_sample(loss, form):
    z, t = _case(loss, form)
    expected = np.stack([hessian(_per_sample_loss(loss, t[n]))(z[n]) for n in range(N)])
    assert_close(loss.output_hessian(z, t), expected, what=f"{loss!r}.output_hessian")


@pytest.mark.parametrize(("loss", "form"), CASES, ids=IDS)
def test_output_hessian_sqrt_squares_to_hessian(loss, form):
    # Closed-form identity S S^T = d2l/dz2 (softmax: uses sum_i p_i = 1).
    z, t = _case(loss, form)
    s = loss.output_hessian_sqrt(z, t)
    assert s.shape == (N, K, K)
    assert_close(s @ s.transpose(0, 2, 1), loss.output_hessian(z, t), what=f"{loss!r} S S^T")


@pytest.mark.parametrize(("loss", "form"), CASES, ids=IDS)
def test_mean_value_under_autograd_matches_value(loss, form):
    # The functional form used for exact Hessians gives the same number as value().
    z, t = _case(loss, form)
    assert_close(loss.mean_value(z, t, anp), loss.value(z, t), what=f"{loss!r}.mean_value")
    assert_close(
        grad(lambda u: loss.mean_value(u, t, anp))(z) * N,
        loss.output_gradient(z, t),
        what=f"{loss!r} autograd of mean_value",
    )


def test_squared_error_hessian_is_identity():
    z, t = _case(nn.SquaredError(), 0)
    np.testing.assert_array_equal(
        nn.SquaredError().output_hessian(z, t), np.broadcast_to(np.eye(K), (N, K, K))
    )


def test_large_logits_give_exact_finite_values():
    # Closed form: softplus(1000) - 1000 = log1p(e^-1000) = 0 to double precision; softplus(-1000)
    # = 0; softplus(1000) - 0 = 1000. Softmax: logsumexp([1000, 0, -1000]) = 1000.
    z = np.array([[1000.0, -1000.0, 1000.0]])
    t = np.array([[1.0, 0.0, 0.0]])
    assert nn.SigmoidCrossEntropy().value(z, t) == 1000.0
    np.testing.assert_array_equal(nn.SigmoidCrossEntropy().output_gradient(z, t), [[0.0, 0.0, 1.0]])
    logits = np.array([[1000.0, 0.0, -1000.0]])
    assert nn.SoftmaxCrossEntropy().value(logits, np.array([0])) == 0.0
    assert nn.SoftmaxCrossEntropy().value(logits, np.array([1])) == 1000.0
    np.testing.assert_array_equal(
        nn.SoftmaxCrossEntropy().output_gradient(logits, np.array([1])), [[1.0, -1.0, 0.0]]
    )


@pytest.mark.parametrize("loss", LOSS_OBJECTS, ids=repr)
def test_float32_stays_float32(loss):
    z, t = _case(loss, 0)
    z = z.astype(np.float32)
    t = t if t.dtype.kind == "i" else t.astype(np.float32)
    assert isinstance(loss.value(z, t), float)
    assert loss.output_gradient(z, t).dtype == np.float32
    assert loss.output_hessian(z, t).dtype == np.float32
    assert loss.output_hessian_sqrt(z, t).dtype == np.float32
    assert loss.sample_targets(z, np.random.default_rng(0)).dtype.kind == t.dtype.kind


@pytest.mark.parametrize("loss", LOSS_OBJECTS, ids=repr)
def test_sample_targets_same_seed_same_bits_and_accepted(loss):
    z, _ = _case(loss, 0)
    first = loss.sample_targets(z, np.random.default_rng(7))
    second = loss.sample_targets(z, np.random.default_rng(7))
    np.testing.assert_array_equal(first, second)
    assert first.dtype == second.dtype
    loss.check_targets(z, first)  # the loss accepts what it samples


#: Monte Carlo sample size and the accepted deviation in standard errors (a 5-sigma two-sided
#: bound fails with probability below 1e-6 per entry; the seeds are fixed, so the test is stable).
DRAWS = 20_000
SIGMAS = 5.0


def _repeat(z_row):
    return np.repeat(z_row[None, :], DRAWS, axis=0)


def test_squared_error_samples_are_output_plus_standard_normal():
    z = _repeat(np.array([0.5, -1.0, 2.0]))
    noise = nn.SquaredError().sample_targets(z, np.random.default_rng(1)) - z
    # Mean 0 with standard error 1/sqrt(M); variance 1 with standard error sqrt(2/M).
    assert np.all(np.abs(noise.mean(axis=0)) < SIGMAS / np.sqrt(DRAWS))
    assert np.all(np.abs(noise.var(axis=0) - 1.0) < SIGMAS * np.sqrt(2.0 / DRAWS))


def test_sigmoid_samples_are_bernoulli_of_sigmoid():
    z_row = np.array([-2.0, 0.0, 1.5])
    p = 1.0 / (1.0 + np.exp(-z_row))
    t = nn.SigmoidCrossEntropy().sample_targets(_repeat(z_row), np.random.default_rng(2))
    assert set(np.unique(t)) <= {0.0, 1.0}
    assert np.all(np.abs(t.mean(axis=0) - p) < SIGMAS * np.sqrt(p * (1 - p) / DRAWS))


def test_softmax_samples_are_categorical_of_softmax():
    z_row = np.array([1.0, -0.5, 0.0, 2.0])
    p = np.exp(z_row) / np.exp(z_row).sum()
    c = nn.SoftmaxCrossEntropy().sample_targets(_repeat(z_row), np.random.default_rng(3))
    assert c.dtype == np.int64 and c.shape == (DRAWS,)
    frequencies = np.bincount(c, minlength=len(p)) / DRAWS
    assert np.all(np.abs(frequencies - p) < SIGMAS * np.sqrt(p * (1 - p) / DRAWS))


#: The largest value ``Generator.random`` can return.
LARGEST_UNIFORM = np.nextafter(1.0, 0.0)


class _LargestUniformGenerator(np.random.Generator):
    """A ``Generator`` whose ``random`` returns its largest possible value, ``1 - 2^-53``."""

    def random(self, size=None, dtype=np.float64, out=None):
        return np.full(size, LARGEST_UNIFORM)


def _rows_whose_cumulative_total_rounds_below_one(count=8, width=7):
    """Deterministic logits (seed 0, standard normal ``(1, width)`` rows) with ``P_nK < 1 - 2^-53``.

    ``P_nK`` is computed by the implementation's own route (``_softmax`` then ``cumsum``), the
    quantity its row-total scaling guards; about 7% of such rows round that far below 1.
    """
    z = np.random.default_rng(0).standard_normal((400, width))
    totals = np.cumsum(_softmax(z), axis=1)[:, -1]
    return z[totals < LARGEST_UNIFORM][:count]


def test_softmax_sampling_never_leaves_the_class_range():
    # Rows whose cumulative total P_nK rounds below 1 and the largest draw u = 1 - 2^-53 > P_nK:
    # without the scaling by P_nK every P_ni < u and c_n would be K (out of range). Expected by
    # hand: P_ni < u P_nK fails only for i = K - 1 (u P_nK is one ulp below P_nK, and each p_ni is
    # far above one ulp), so c_n = K - 1.
    z = _rows_whose_cumulative_total_rounds_below_one()
    totals = np.cumsum(_softmax(z), axis=1)[:, -1]
    assert len(z) == 8 and np.all(totals != 1.0) and np.all(totals < LARGEST_UNIFORM)
    rng = _LargestUniformGenerator(np.random.PCG64(0))
    c = nn.SoftmaxCrossEntropy().sample_targets(z, rng)
    np.testing.assert_array_equal(c, z.shape[1] - 1)
    # A class with probability ~1 and an ordinary generator: that class every time.
    z = np.tile(np.array([[0.0, 0.0, 800.0]]), (1000, 1))
    c = nn.SoftmaxCrossEntropy().sample_targets(z, np.random.default_rng(4))
    np.testing.assert_array_equal(c, 2)


# -- saturated logits ------------------------------------------------------------------------------

#: Logits from deep saturation to deep saturation: sigmoid spans 4e-18 .. 1 - 4e-18.
SATURATED = np.linspace(-40.0, 40.0, 161)
#: Elementwise relative tolerance: the stable forms are within a few ulp of expit.
SATURATED_RTOL = 1e-14


def test_sigmoid_keeps_relative_precision_at_saturated_logits():
    # Independent route: scipy.special.expit (sigmoid) at every logit, elementwise relative.
    z = SATURATED
    s, s_minus = expit(z), expit(-z)
    y, cache = nn.Sigmoid().forward(z)
    np.testing.assert_allclose(y, s, rtol=SATURATED_RTOL, atol=0)
    np.testing.assert_allclose(nn.Sigmoid().apply(z, np), s, rtol=SATURATED_RTOL, atol=0)
    dy = np.ones_like(z)
    np.testing.assert_allclose(
        nn.Sigmoid().backward(cache, dy), s * s_minus, rtol=SATURATED_RTOL, atol=0
    )
    _, cache = nn.Softplus().forward(z)
    np.testing.assert_allclose(nn.Softplus().backward(cache, dy), s, rtol=SATURATED_RTOL, atol=0)


def test_sigmoid_pair_equals_its_two_sided_formula_bit_for_bit():
    # Slow twin: the written-out pair with 1 + e formed twice, (1/(1+e), e/(1+e)) for x >= 0 and
    # swapped for x < 0, e = exp(-|x|): the same operations, so the same bits.
    for dtype in (np.float64, np.float32):
        x = np.concatenate([SATURATED, SOFTPLUS_LOGITS]).astype(dtype)
        e = np.exp(-np.abs(x))
        large, small = 1 / (1 + e), e / (1 + e)
        s, s_minus = sigmoid_pair(x)
        np.testing.assert_array_equal(s, np.where(x >= 0, large, small))
        np.testing.assert_array_equal(s_minus, np.where(x >= 0, small, large))
        assert s.dtype == s_minus.dtype == dtype
        np.testing.assert_array_equal(sigmoid(x), s)  # sigmoid forms only its half: same bits


def test_sigmoid_cross_entropy_at_saturated_logits():
    # Independent route: scipy.special.expit / log_expit. Gradient s - t is expit(z) at t = 0 and
    # -expit(-z) at t = 1; Hessian diagonal expit(z) expit(-z); value sum_i softplus(z_i) - t_i z_i
    # with softplus(z) = -log_expit(-z).
    loss = nn.SigmoidCrossEntropy()
    z = SATURATED[None, :]
    s, s_minus = expit(z), expit(-z)
    zeros, ones = np.zeros_like(z), np.ones_like(z)
    np.testing.assert_allclose(loss.output_gradient(z, zeros), s, rtol=SATURATED_RTOL, atol=0)
    np.testing.assert_allclose(loss.output_gradient(z, ones), -s_minus, rtol=SATURATED_RTOL, atol=0)
    hessian_diagonal = np.diagonal(loss.output_hessian(z, zeros), axis1=1, axis2=2)
    np.testing.assert_allclose(hessian_diagonal, s * s_minus, rtol=SATURATED_RTOL, atol=0)
    sqrt_diagonal = np.diagonal(loss.output_hessian_sqrt(z, zeros), axis1=1, axis2=2)
    np.testing.assert_allclose(sqrt_diagonal, np.sqrt(s * s_minus), rtol=SATURATED_RTOL, atol=0)
    assert_close(loss.value(z, zeros), -np.sum(log_expit(-z)), rtol=SATURATED_RTOL)


#: Logits for the fast softplus: random ones, both signs of 0, and deep saturation up to 1e4 (where
#: ``exp(-|z|)`` underflows to 0 and softplus is ``max(z, 0)`` exactly).
SOFTPLUS_LOGITS = np.concatenate(
    [
        3.0 * np.random.default_rng(7).standard_normal(200),
        [0.0, -0.0, 1e-300, -1e-300, 20.0, -20.0, 40.0, -40.0, 700.0, -700.0, 1e4, -1e4],
    ]
)


def test_softplus_matches_logaddexp_form():
    # Slow twin: numpy.logaddexp(0, z), the form the fast max(z, 0) + log1p(exp(-|z|)) rewrites
    # (NumPy's scalar loop computes the same formula per entry), elementwise relative, both dtypes.
    for dtype, rtol in ((np.float64, 1e-15), (np.float32, 1e-6)):
        z = SOFTPLUS_LOGITS.astype(dtype)
        fast = softplus(z)
        assert fast.dtype == dtype
        np.testing.assert_allclose(fast, np.logaddexp(dtype(0), z), rtol=rtol, atol=0)
    np.testing.assert_array_equal(softplus(np.array([1e4, -1e4, 700.0])), [1e4, 0.0, 700.0])
    # The Softplus layer's forward uses it; its apply (autograd's form) keeps logaddexp.
    y, _ = nn.Softplus().forward(SOFTPLUS_LOGITS)
    np.testing.assert_allclose(y, nn.Softplus().apply(SOFTPLUS_LOGITS, np), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_cross_entropy_value_matches_its_logaddexp_mean_value(dtype):
    # Slow twin: mean_value with xp = numpy, sum of logaddexp(0, z) - t z (the autograd form).
    # 1e-14 relative in float64; float32 sums of 4 x 212 terms: 1e-6.
    loss = nn.SigmoidCrossEntropy()
    rng = np.random.default_rng(3)
    z = np.tile(SOFTPLUS_LOGITS, (4, 1)).astype(dtype)
    for t in (rng.random(z.shape), (rng.random(z.shape) < 0.5) * 1.0):
        t = t.astype(dtype)
        expected = float(loss.mean_value(z, t, np))
        rtol = 1e-14 if dtype == np.float64 else 1e-6
        assert_close(loss.value(z, t), expected, rtol=rtol, what="SigmoidCrossEntropy.value")
