"""BFGS inverse/direct updates, skip rules and Hessian-action BFGS (docs/derivations/quasi-newton.md
sections 1-3). Each test says where its expected value comes from."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import BFGS

from kfqn_ref.quasi_newton import (
    SkipReason,
    bfgs_direct_update,
    bfgs_inverse_formula,
    bfgs_inverse_update,
    hessian_action_bfgs_update,
    hessian_action_pair,
    powell_damping,
)
from tests.helpers.compare import assert_close
from tests.quasi_newton.pair_streams import (
    CURVED_KINDS,
    curved_stream,
    positive_pair,
    random_spd,
)

seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 7)
curved_kinds = st.lists(st.sampled_from(CURVED_KINDS), min_size=15, max_size=15)


def sym_sqrt(M):
    """M^{1/2} by a symmetric eigendecomposition (independent of the code under test)."""
    w, V = np.linalg.eigh(M)
    return (V * np.sqrt(w)) @ V.T


# --- [QN-1], [QN-2], [QN-3], [QN-4]: the update, the secant equation, SPD -------------------------


@given(seed=seeds, d=dims)
def test_expanded_form_equals_product_form(seed, d):
    """[QN-2] == [QN-1]: expected from the product form, (I - rho s y^T) H (I - rho y s^T)
    + rho s s^T, built densely."""
    rng = np.random.default_rng(seed)
    H = random_spd(rng, d)
    s, y = positive_pair(rng, d)
    rho = 1.0 / (s @ y)
    E = np.eye(d) - rho * np.outer(s, y)
    expected = E @ H @ E.T + rho * np.outer(s, s)
    assert_close(bfgs_inverse_formula(H, s, y), expected, rtol=1e-10, what="H+ (expanded form)")


@given(seed=seeds, d=dims)
def test_secant_equation(seed, d):
    """[QN-3] H+ y = s; expected: s itself."""
    rng = np.random.default_rng(seed)
    H = random_spd(rng, d)
    s, y = positive_pair(rng, d)
    result = bfgs_inverse_update(H, s, y)
    assert result.updated and result.reason is SkipReason.NONE
    assert_close(result.H @ y, s, rtol=1e-10, what="H+ y")


@settings(max_examples=50)
@given(seed=seeds, d=dims, kinds=st.lists(st.sampled_from(CURVED_KINDS), min_size=20, max_size=20))
def test_symmetry_and_positive_definiteness_preserved(seed, d, kinds):
    """[QN-4] along 20 pairs: curved pairs y = A_k s (A_k SPD, eigenvalues in [0.1, 10], a new A_k
    each step) are applied, pairs of negative curvature and y = 0 are skipped. H stays exactly
    symmetric (bitwise: the update is written symmetrically) and positive definite (expected:
    numpy's Cholesky succeeds, eigvalsh > 0). Pairs of tiny positive curvature are left out: in
    exact arithmetic they keep H SPD too, but they can push cond(H) past 1/eps, where no floating
    point check can certify definiteness; the damped streams of test_convergence_bounds cover
    them."""
    rng = np.random.default_rng(seed)
    H = random_spd(rng, d)
    for step, (kind, (s, y)) in enumerate(zip(kinds, curved_stream(rng, d, kinds), strict=True)):
        result = bfgs_inverse_update(H, s, y)
        assert result.updated == (kind == "curved"), f"step {step}: {result.reason}"
        H = result.H
        assert np.array_equal(H, H.T), f"step {step}: H+ not exactly symmetric"
        np.linalg.cholesky(H)
        assert np.linalg.eigvalsh(H).min() > 0, f"step {step}"


def test_negative_curvature_would_break_definiteness():
    """[QN-4] why the skip rule exists: with s^T y < 0 the raw formula gives y^T H+ y = s^T y < 0
    (expected value from the secant equation)."""
    rng = np.random.default_rng(0)
    H = random_spd(rng, 4)
    s, y = positive_pair(rng, 4)
    y = -y
    H_raw = bfgs_inverse_formula(H, s, y)
    assert y @ H_raw @ y == pytest.approx(s @ y, rel=1e-10)
    assert np.linalg.eigvalsh(H_raw).min() < 0
    assert bfgs_inverse_update(H, s, y).reason is SkipReason.NON_POSITIVE_CURVATURE


# --- [QN-5]: skip rules ---------------------------------------------------------------------------


def test_each_skip_reason_and_the_unchanged_matrix():
    """[QN-5] one hand-made pair per branch; expected reasons from the rule's definition. A
    skipped update returns the input array itself."""
    H = np.diag([1.0, 2.0, 3.0])
    s = np.array([1.0, 0.0, 0.0])
    cases = [
        (np.array([2.0, 0.0, 0.0]), 0.0, SkipReason.NONE),
        (np.array([-1.0, 0.0, 0.0]), 0.0, SkipReason.NON_POSITIVE_CURVATURE),
        (np.array([0.0, 1.0, 0.0]), 0.0, SkipReason.NON_POSITIVE_CURVATURE),  # s^T y = 0
        # s^T y = 1e-5 <= 1e-4 * (s^T s = 1) * ||gbar|| = 1e-3: below the relative threshold
        (np.array([1e-5, 0.0, 0.0]), 10.0, SkipReason.BELOW_RELATIVE_THRESHOLD),
        (np.array([1e-5, 0.0, 0.0]), 0.09, SkipReason.NONE),  # threshold 9e-6 < 1e-5
        (np.array([1e-170, 0.0, 0.0]), 0.0, SkipReason.NON_FINITE_RESULT),  # rho^2 overflows
    ]
    for y, gbar_norm, reason in cases:
        result = bfgs_inverse_update(H, s, y, gbar_norm=gbar_norm)
        assert result.reason is reason, (y, gbar_norm)
        assert result.updated == (reason is SkipReason.NONE)
        if not result.updated:
            assert result.H is H


def test_relative_threshold_is_an_option():
    """The 1e-4 of the authors is the default; another threshold moves the boundary."""
    H = np.eye(2)
    s, y = np.array([1.0, 0.0]), np.array([1e-3, 0.0])
    assert bfgs_inverse_update(H, s, y, gbar_norm=1.0).updated  # 1e-3 > 1e-4
    skipped = bfgs_inverse_update(H, s, y, gbar_norm=1.0, relative_threshold=1e-2)
    assert skipped.reason is SkipReason.BELOW_RELATIVE_THRESHOLD
    assert bfgs_inverse_update(H, s, y, gbar_norm=1.0, relative_threshold=0.0).updated


def test_overflowing_inner_products_are_skipped():
    """Finite s with s^T s = inf: the curvature test is meaningless (NON_FINITE_INNER_PRODUCT)."""
    s = np.array([1e200, 0.0])
    result = bfgs_inverse_update(np.eye(2), s, s)
    assert result.reason is SkipReason.NON_FINITE_INNER_PRODUCT
    assert bfgs_direct_update(np.eye(2), s, s).reason is SkipReason.NON_FINITE_INNER_PRODUCT


@settings(max_examples=200)
@given(
    seed=seeds,
    d=dims,
    log_s=st.floats(-300, 300),
    log_y=st.floats(-300, 300),
    gbar=st.sampled_from([0.0, 1.0, 1e300]),
)
def test_extreme_finite_data_never_give_a_non_finite_matrix(seed, d, log_s, log_y, gbar):
    """Bad input: whatever finite data, the returned H and B are finite (a non-finite candidate
    is rejected with a reason) and are new matrices only when updated."""
    rng = np.random.default_rng(seed)
    H = random_spd(rng, d)
    s = 10.0**log_s * rng.standard_normal(d)
    y = 10.0**log_y * rng.standard_normal(d)
    for result in (
        bfgs_inverse_update(H, s, y, gbar_norm=gbar),
        bfgs_direct_update(H, s, y, gbar_norm=gbar),
    ):
        assert np.isfinite(result[0]).all(), result.reason
        assert (result[0] is H) == (not result.updated)


# --- [QN-6], [QN-7]: the direct update and its inverse --------------------------------------------


@given(seed=seeds, d=dims)
def test_direct_and_inverse_updates_stay_inverses(seed, d):
    """[QN-7] B_k = H_k^{-1} along 10 updates from B_0 = H_0^{-1}; expected: the identity
    (H_k @ B_k), and the direct update's own secant equation B+ s = y."""
    rng = np.random.default_rng(seed)
    H = random_spd(rng, d, log10_eig=(-1.0, 1.0))
    B = np.linalg.inv(H)
    B = (B + B.T) / 2
    for step in range(10):
        s, y = positive_pair(rng, d)
        H = bfgs_inverse_update(H, s, y).H
        B = bfgs_direct_update(B, s, y).B
        assert_close(B @ s, y, rtol=1e-10, what=f"step {step}: B+ s")
        assert_close(H @ B, np.eye(d), rtol=1e-10, what=f"step {step}: H+ B+")


# --- agreement with scipy.optimize.BFGS (HessianUpdateStrategy) -----------------------------------


def scipy_strategy(d, approx_type, gamma, **options):
    strategy = BFGS(init_scale=gamma, **options)
    strategy.initialize(d, approx_type)
    return strategy


@settings(max_examples=50)
@given(seed=seeds, d=st.integers(2, 7), kinds=curved_kinds, gamma=st.floats(0.1, 10.0))
def test_agrees_with_scipy_bfgs_skip_update(seed, d, kinds, gamma):
    """Expected from scipy.optimize.BFGS(exception_strategy='skip_update', min_curvature=0,
    init_scale=gamma): it skips exactly when s^T y <= 0, which is our rule with gbar_norm = 0.
    Both the inverse ('inv_hess') and the direct ('hess') forms, from H_0 = gamma I. Streams of
    curved and negative-curvature pairs (y = 0 makes scipy warn and return early)."""
    kinds = [kind for kind in kinds if kind != "zero_y"]
    H, B = gamma * np.eye(d), np.eye(d) / gamma
    inverse = scipy_strategy(
        d, "inv_hess", gamma, exception_strategy="skip_update", min_curvature=0.0
    )
    direct = scipy_strategy(
        d, "hess", 1.0 / gamma, exception_strategy="skip_update", min_curvature=0.0
    )
    for step, (s, y) in enumerate(curved_stream(np.random.default_rng(seed), d, kinds)):
        H = bfgs_inverse_update(H, s, y).H
        B = bfgs_direct_update(B, s, y).B
        inverse.update(s, y)
        direct.update(s, y)
        assert_close(H, inverse.get_matrix(), rtol=1e-10, what=f"step {step}: H vs scipy")
        assert_close(B, direct.get_matrix(), rtol=1e-10, what=f"step {step}: B vs scipy")


@settings(max_examples=50)
@given(seed=seeds, d=st.integers(2, 7), kinds=curved_kinds, mu1=st.floats(0.05, 0.95))
def test_powell_then_bfgs_agrees_with_scipy_damp_update(seed, d, kinds, mu1):
    """Expected from scipy.optimize.BFGS(exception_strategy='damp_update', min_curvature=mu1) in
    'inv_hess' mode, which damps s towards H y exactly as our H-form Powell damping [QN-15]."""
    kinds = [kind for kind in kinds if kind != "zero_y"]
    H = np.eye(d)
    reference = scipy_strategy(
        d, "inv_hess", 1.0, exception_strategy="damp_update", min_curvature=mu1
    )
    for step, (s, y) in enumerate(curved_stream(np.random.default_rng(seed), d, kinds)):
        damped = powell_damping(s, y, H, mu1=mu1)
        H = bfgs_inverse_update(H, damped.s, damped.y).H
        reference.update(s, y)
        assert_close(H, reference.get_matrix(), rtol=1e-10, what=f"step {step}: H vs scipy")


# --- dtype and purity -----------------------------------------------------------------------------


def test_float32_keeps_dtype_and_satisfies_the_secant_equation_to_float32_precision():
    """float32 in, float32 out; H+ y = s to float32 accuracy (rtol 1e-4, eps32 ~ 1.2e-7)."""
    rng = np.random.default_rng(3)
    H = random_spd(rng, 5, log10_eig=(-1.0, 1.0), dtype=np.float32)
    s, y = positive_pair(rng, 5, dtype=np.float32)
    result = bfgs_inverse_update(H, s, y)
    assert result.H.dtype == np.float32
    assert_close(result.H @ y, s, rtol=1e-4, what="float32 H+ y")
    assert bfgs_direct_update(H, s, y).B.dtype == np.float32


def test_inputs_are_not_modified():
    rng = np.random.default_rng(4)
    H = random_spd(rng, 4)
    s, y = positive_pair(rng, 4)
    M = random_spd(rng, 4)
    copies = [a.copy() for a in (H, s, y, M)]
    bfgs_inverse_update(H, s, y)
    bfgs_direct_update(H, s, y)
    hessian_action_bfgs_update(H, s, M)
    for original, copy in zip((H, s, y, M), copies, strict=True):
        assert np.array_equal(original, copy)


# --- [QN-8] .. [QN-10]: Hessian-action BFGS -------------------------------------------------------


@given(seed=seeds, d=dims)
def test_hessian_action_pair_with_operators_equals_matrices(seed, d):
    """[QN-8] s = H v, y = M s; M (and H) given as callables give the same pair as matrices;
    expected from dense products."""
    rng = np.random.default_rng(seed)
    H, M = random_spd(rng, d), random_spd(rng, d)
    v = rng.standard_normal(d)
    s, y = hessian_action_pair(H, v, M)
    assert_close(s, H @ v, rtol=1e-12, what="s = H v")
    assert_close(y, M @ (H @ v), rtol=1e-12, what="y = M s")
    s_op, y_op = hessian_action_pair(lambda u: H @ u, v, lambda u: M @ u)
    assert np.array_equal(s_op, s) and np.array_equal(y_op, y)
    by_matrix = hessian_action_bfgs_update(H, v, M)
    by_operator = hessian_action_bfgs_update(H, v, lambda u: M @ u)
    assert np.array_equal(by_matrix.H, by_operator.H)


@given(seed=seeds, d=dims)
def test_hessian_action_conjugation_identity(seed, d):
    """[QN-9], first step: for the pair s = H v, y = M s of ``hessian_action_pair``, with
    u = M^{1/2} s, rho = 1/(s^T y) = 1/(u^T u) and M^{1/2} (I - rho s y^T) = M^{1/2} -
    rho M^{1/2} s s^T M = (I - rho u u^T) M^{1/2}; expected: each side built densely with an
    independent M^{1/2} (eigh)."""
    rng = np.random.default_rng(seed)
    H, M = random_spd(rng, d, log10_eig=(-1, 1)), random_spd(rng, d, log10_eig=(-1, 1))
    s, y = hessian_action_pair(H, rng.standard_normal(d), M)
    rho, root = 1.0 / (s @ y), sym_sqrt(M)
    u = root @ s
    assert rho == pytest.approx(1.0 / (u @ u), rel=1e-10)
    left = root @ (np.eye(d) - rho * np.outer(s, y))
    middle = root - rho * root @ np.outer(s, s) @ M
    right = (np.eye(d) - rho * np.outer(u, u)) @ root
    scale = 1e-10 * np.abs(root).max()  # the terms' size: for d = 1 both sides are exactly 0
    assert_close(left, middle, atol=scale, what="M^1/2 (I - rho s y^T) vs the middle form")
    assert_close(left, right, atol=scale, what="M^1/2 (I - rho s y^T) vs (I - rho u u^T) M^1/2")


@given(seed=seeds, d=dims)
def test_hessian_action_projection_identity(seed, d):
    """[QN-9] K+ = P K P + (I - P) with K = M^{1/2} H M^{1/2}, u = M^{1/2} s, P = I - uu^T/u^Tu;
    expected from the right-hand side built with an independent M^{1/2} (eigh)."""
    rng = np.random.default_rng(seed)
    H, M = random_spd(rng, d, log10_eig=(-1, 1)), random_spd(rng, d, log10_eig=(-1, 1))
    v = rng.standard_normal(d)
    result = hessian_action_bfgs_update(H, v, M)
    assert result.updated
    root = sym_sqrt(M)
    K, K_new = root @ H @ root, root @ result.H @ root
    u = root @ (H @ v)
    P = np.eye(d) - np.outer(u, u) / (u @ u)
    assert_close(K_new, P @ K @ P + (np.eye(d) - P), rtol=1e-10, what="K+")
    assert_close(result.H @ (M @ (H @ v)), H @ v, rtol=1e-10, what="H+ M s = s")


@settings(max_examples=50)
@given(seed=seeds, d=dims)
def test_hessian_action_eigenvalue_containment(seed, d):
    """[QN-10] with M fixed, the eigenvalues of K_k = M^{1/2} H_k M^{1/2} stay in
    [min(lambda_min(K_0), 1), max(lambda_max(K_0), 1)] for 30 updates with random v, and the
    distance ||K_k - I||_F never grows ([QN-10b]: E+ = P E P). Expected: eigvalsh of K_k;
    slack 1e-10 relative to the interval's ends (rounding of the 30 updates)."""
    rng = np.random.default_rng(seed)
    H, M = random_spd(rng, d, log10_eig=(-2, 2)), random_spd(rng, d, log10_eig=(-2, 2))
    root = sym_sqrt(M)
    lam0 = np.linalg.eigvalsh(root @ H @ root)
    low, high = min(lam0[0], 1.0), max(lam0[-1], 1.0)
    distance = np.linalg.norm(root @ H @ root - np.eye(d))
    for step in range(30):
        H = hessian_action_bfgs_update(H, rng.standard_normal(d), M).H
        K = root @ H @ root
        lam = np.linalg.eigvalsh((K + K.T) / 2)
        assert lam[0] >= low * (1 - 1e-10) and lam[-1] <= high * (1 + 1e-10), (step, lam, low, high)
        new_distance = np.linalg.norm(K - np.eye(d))
        assert new_distance <= distance * (1 + 1e-10) + 1e-12, (step, new_distance, distance)
        distance = new_distance


@given(seed=seeds, d=dims)
def test_hessian_action_recovers_m_inverse_along_the_directions_used(seed, d):
    """[QN-10c] choosing v_k so that u_k = M^{1/2} s_k are orthonormal, H_k M s_j = s_j for every
    j <= k (H -> M^{-1} along the directions used), and after d updates H = M^{-1}. Expected:
    s_j itself, and M^{-1} by numpy.linalg.inv."""
    rng = np.random.default_rng(seed)
    H, M = random_spd(rng, d, log10_eig=(-1, 1)), random_spd(rng, d, log10_eig=(-1, 1))
    root = sym_sqrt(M)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    used = []
    for k in range(d):
        s_k = np.linalg.solve(root, Q[:, k])  # the step whose u_k = q_k
        v_k = np.linalg.solve(H, s_k)  # so that H v_k = s_k
        result = hessian_action_bfgs_update(H, v_k, M)
        assert result.updated
        H = result.H
        used.append(s_k)
        for j, s_j in enumerate(used):
            assert_close(H @ (M @ s_j), s_j, rtol=1e-10, what=f"update {k}: H M s_{j}")
    assert_close(H, np.linalg.inv(M), rtol=1e-10, what="H after d updates vs M^-1")


def test_hessian_action_relative_skip_rule_uses_the_given_reference_norm():
    """The authors pass gbar_norm = ||v||: with M tiny the pair is below 1e-4 s^T s ||v||."""
    H = np.eye(3)
    v = np.array([100.0, 0.0, 0.0])
    M = 1e-3 * np.eye(3)
    skipped = hessian_action_bfgs_update(H, v, M, gbar_norm=float(np.linalg.norm(v)))
    assert skipped.reason is SkipReason.BELOW_RELATIVE_THRESHOLD and skipped.H is H
    assert hessian_action_bfgs_update(H, v, M).updated
