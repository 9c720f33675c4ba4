"""Each damping scheme's guarantee, on adversarial pairs including negative curvature
(docs/derivations/quasi-newton.md section 5).

Expected values are the inequalities themselves, evaluated with numpy inner products. An
inequality ``lhs >= rhs`` is checked up to ``TOL * scale``, where ``scale`` bounds the size of
the terms summed in the inner products (``||s|| ||y||`` and ``||s||^2`` or ``y^T H y``): the
rounding of an inner product of length <= 8 is far below ``1e-12`` of that scale.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfqn_ref.quasi_newton import (
    double_damping_2020,
    double_damping_2022,
    lbfgs_append,
    lbfgs_compact_apply,
    lbfgs_init,
    levenberg_marquardt_damping,
    powell_damping,
    second_damping,
)
from tests.helpers.compare import assert_close
from tests.quasi_newton.pair_streams import PAIR_KINDS, curved_stream, make_pair, random_spd

TOL = 1e-12
seeds = st.integers(0, 2**32 - 1)
scales = st.floats(-4.0, 4.0)
mu = st.floats(0.01, 0.99)


def pair(seed, d, kind, log_s, log_y):
    rng = np.random.default_rng(seed)
    return rng, *make_pair(rng, d, kind, log_s, log_y)


def y_H_y(y, H):
    return float(y @ H @ y)


@settings(max_examples=150)
@given(
    seed=seeds,
    d=st.integers(1, 6),
    kind=st.sampled_from(PAIR_KINDS),
    log_s=scales,
    log_y=scales,
    mu1=mu,
)
def test_powell_guarantee(seed, d, kind, log_s, log_y, mu1):
    """[QN-16] s'^T y >= mu1 y^T H y (equality when damped); H as a matrix and as a callable give
    the same pair; y is untouched."""
    rng, s, y = pair(seed, d, kind, log_s, log_y)
    H = random_spd(rng, d)
    result = powell_damping(s, y, H, mu1=mu1)
    assert result.y is y
    yHy = y_H_y(y, H)
    scale = np.linalg.norm(result.s) * np.linalg.norm(y) + yHy
    assert result.s @ y >= mu1 * yHy - TOL * scale
    assert result.damped == (s @ y < mu1 * yHy)
    if result.damped:
        assert result.s @ y == pytest.approx(mu1 * yHy, rel=1e-10, abs=TOL * scale)
    else:
        assert result.s is s
    by_operator = powell_damping(s, y, lambda u: H @ u, mu1=mu1)
    assert np.array_equal(by_operator.s, result.s) and by_operator.damped == result.damped


def test_powell_repairs_negative_curvature_by_the_closed_form():
    """[QN-15] H = I, s = e1, y = -e1, mu1 = 0.2: theta = 0.8 / 2 = 0.4 and
    s' = 0.4 e1 + 0.6 (-e1) = -0.2 e1, so s'^T y = 0.2 = mu1 y^T y (expected by hand)."""
    result = powell_damping(np.array([1.0, 0.0]), np.array([-1.0, 0.0]), np.eye(2), mu1=0.2)
    assert result.damped
    assert_close(result.s, np.array([-0.2, 0.0]), rtol=1e-15, what="s'")


@settings(max_examples=150)
@given(
    seed=seeds,
    d=st.integers(1, 6),
    kind=st.sampled_from(PAIR_KINDS),
    log_s=scales,
    log_y=scales,
    eps=st.floats(0.01, 1.0),
)
def test_second_damping_guarantee(seed, d, kind, log_s, log_y, eps):
    """[QN-18] s^T y' >= eps s^T s (equality when damped); s untouched."""
    _, s, y = pair(seed, d, kind, log_s, log_y)
    result = second_damping(s, y, eps=eps)
    assert result.s is s
    scale = np.linalg.norm(s) * (np.linalg.norm(result.y) + np.linalg.norm(s))
    assert s @ result.y >= eps * (s @ s) - TOL * scale
    assert result.damped == (s @ y < eps * (s @ s))
    if result.damped:
        assert s @ result.y == pytest.approx(eps * (s @ s), rel=1e-10, abs=TOL * scale)


@settings(max_examples=100)
@given(
    seed=seeds,
    d=st.integers(1, 6),
    kind=st.sampled_from(PAIR_KINDS),
    log_s=scales,
    log_y=scales,
    mu2=st.floats(1e-3, 10.0),
)
def test_levenberg_marquardt_adds_mu2_sTs(seed, d, kind, log_s, log_y, mu2):
    """[QN-19] s^T y' = s^T y + mu2 s^T s (expected: that sum), so s^T y' >= mu2 s^T s exactly
    when s^T y >= 0."""
    _, s, y = pair(seed, d, kind, log_s, log_y)
    result = levenberg_marquardt_damping(s, y, mu2=mu2)
    assert result.damped and result.s is s
    scale = np.linalg.norm(s) * (np.linalg.norm(y) + mu2 * np.linalg.norm(s))
    assert abs(s @ result.y - (s @ y + mu2 * (s @ s))) <= TOL * scale
    if s @ y >= 0:
        assert s @ result.y >= mu2 * (s @ s) - TOL * scale


def test_levenberg_marquardt_alone_does_not_repair_strong_negative_curvature():
    """[QN-19] s^T y = -1, mu2 = 0.5, s^T s = 1: s^T y' = -0.5 < mu2 s^T s (expected by hand):
    LM needs Powell before it, which is why DD-2022 composes them."""
    s, y = np.array([1.0, 0.0]), np.array([-1.0, 0.0])
    result = levenberg_marquardt_damping(s, y, mu2=0.5)
    assert s @ result.y == pytest.approx(-0.5)
    both = double_damping_2022(s, y, np.eye(2), mu2=0.5)  # s' = -0.2 e1, y' = -1.1 e1
    assert both.s @ both.y >= 0.5 * (both.s @ both.s)


@settings(max_examples=150)
@given(
    seed=seeds,
    d=st.integers(1, 6),
    kind=st.sampled_from(PAIR_KINDS),
    log_s=scales,
    log_y=scales,
    mu1=mu,
    eps=st.floats(0.01, 1.0),
)
def test_double_damping_2020_guarantee(seed, d, kind, log_s, log_y, mu1, eps):
    """[QN-20] Powell (current H) then the second damping: s^T y >= eps s^T s afterwards; the
    composition equals the two steps applied in turn (expected from the two public steps)."""
    rng, s, y = pair(seed, d, kind, log_s, log_y)
    H = random_spd(rng, d)
    result = double_damping_2020(s, y, H, mu1=mu1, eps=eps)
    scale = np.linalg.norm(result.s) * (np.linalg.norm(result.y) + np.linalg.norm(result.s))
    assert result.s @ result.y >= eps * (result.s @ result.s) - TOL * scale
    powell = powell_damping(s, y, H, mu1=mu1)
    second = second_damping(powell.s, powell.y, eps=eps)
    assert np.array_equal(result.s, second.s) and np.array_equal(result.y, second.y)
    assert (result.powell_damped, result.second_damped) == (powell.damped, second.damped)


@settings(max_examples=150)
@given(
    seed=seeds,
    d=st.integers(1, 6),
    kind=st.sampled_from(PAIR_KINDS),
    log_s=scales,
    log_y=scales,
    mu1=mu,
    mu2=st.floats(1e-3, 10.0),
)
def test_double_damping_2022_guarantee(seed, d, kind, log_s, log_y, mu1, mu2):
    """[QN-21] Powell (current H) then LM: s^T y >= mu1 y0^T H y0 + mu2 s^T s >= mu2 s^T s, with
    y0 the incoming y and s the Powell-damped step (expected: the right-hand sides)."""
    rng, s, y = pair(seed, d, kind, log_s, log_y)
    H = random_spd(rng, d)
    result = double_damping_2022(s, y, H, mu1=mu1, mu2=mu2)
    assert result.second_damped
    yHy = y_H_y(y, H)
    sTs = result.s @ result.s
    scale = np.linalg.norm(result.s) * np.linalg.norm(result.y) + yHy + mu2 * sTs
    assert result.s @ result.y >= mu1 * yHy + mu2 * sTs - TOL * scale
    assert result.s @ result.y >= mu2 * sTs - TOL * scale


def test_damping_with_an_lbfgs_operator_as_H():
    """K-BFGS(L) damps with the current L-BFGS matrix given as an operator: same result as with the
    dense matrix of that operator (expected: the operator applied to the identity)."""
    rng = np.random.default_rng(11)
    state = lbfgs_init(5, 3)
    for s, y in curved_stream(rng, 5, ["curved"] * 3):
        state = lbfgs_append(state, s, y).state
    H_dense = lbfgs_compact_apply(state, np.eye(5))
    s, y = rng.standard_normal(5), rng.standard_normal(5)
    op = double_damping_2020(s, y, lambda u: lbfgs_compact_apply(state, u), eps=0.5)
    dense = double_damping_2020(s, y, (H_dense + H_dense.T) / 2, eps=0.5)
    assert_close(op.s, dense.s, rtol=1e-12, what="s (operator vs matrix H)")
    assert_close(op.y, dense.y, rtol=1e-12, what="y (operator vs matrix H)")


def test_float32_pairs_keep_dtype():
    rng = np.random.default_rng(12)
    s, y = rng.standard_normal(4).astype(np.float32), -rng.standard_normal(4).astype(np.float32)
    H = random_spd(rng, 4, dtype=np.float32)
    for result in (
        powell_damping(s, y, H),
        second_damping(s, y, eps=0.5),
        levenberg_marquardt_damping(s, y, mu2=0.5),
        double_damping_2020(s, y, H, eps=0.5),
        double_damping_2022(s, y, H, mu2=0.5),
    ):
        assert result.s.dtype == np.float32 and result.y.dtype == np.float32


def test_inputs_are_not_modified():
    rng = np.random.default_rng(13)
    s, y = rng.standard_normal(4), -rng.standard_normal(4)
    H = random_spd(rng, 4)
    copies = [a.copy() for a in (s, y, H)]
    double_damping_2020(s, y, H, eps=0.5)
    double_damping_2022(s, y, H, mu2=0.5)
    for original, copy in zip((s, y, H), copies, strict=True):
        assert np.array_equal(original, copy)


@pytest.mark.parametrize("H_form", ["matrix", "callable"])
@pytest.mark.parametrize("exponent", [-170, -300, 150, 300])
def test_powell_with_tiny_or_huge_y_decides_by_the_true_products(H_form, exponent):
    """y = 10^exponent e1 with H = diag(2, 3): y^T H y = 2 10^(2 exponent) under- or overflows
    for exponent = -170, -300, 300, but the decision is made on the true products (scale-safe
    test). s = e1 + e2 (s^T y = 10^exponent): not damped iff 10^exponent >= mu1 2 10^(2 exponent),
    i.e. for the tiny y; s = -e1 (s^T y < 0) is always damped, and then s'^T y = mu1 y^T H y
    exactly [QN-16], checked after dividing by 10^(2 exponent) (expected: by hand)."""
    H = np.diag([2.0, 3.0])
    operator = H if H_form == "matrix" else (lambda u: H @ u)
    y = np.array([10.0**exponent, 0.0])
    plain = powell_damping(np.array([1.0, 1.0]), y, operator, mu1=0.2)
    assert plain.damped == (exponent > 0)
    negative = powell_damping(np.array([-1.0, 0.0]), y, operator, mu1=0.2)
    assert negative.damped
    # s' = theta s + (1 - theta) H y with theta = 0.8 yHy / (yHy + |s^T y|): s'_1 = c 10^exponent
    unit = np.array([1.0, 0.0])
    scaled_s = negative.s / 10.0**exponent  # s'^T y / 10^(2 exponent) = s'_1 / 10^exponent
    assert float(scaled_s @ unit) == pytest.approx(0.2 * 2.0, rel=1e-12)


def test_levenberg_marquardt_overflow_is_reported():
    """y + mu2 s beyond the floating-point range raises ValueError naming mu2 (as the other damping
    steps report an overflowing pair), instead of returning y = inf."""
    s, y = np.array([1e308, 0.0]), np.array([1.0, 0.0])
    with pytest.raises(ValueError, match="y \\+ mu2 s overflows.*mu2 = 10"):
        levenberg_marquardt_damping(s, y, mu2=10.0)
    with pytest.raises(ValueError, match="overflows"):
        double_damping_2022(s, y, np.eye(2), mu2=10.0)
    assert np.isfinite(levenberg_marquardt_damping(s, y, mu2=1.0).y).all()
