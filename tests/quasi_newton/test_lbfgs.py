"""The limited-memory store: two-loop == compact == dense BFGS, the sliding window, acceptance,
gamma rules, matrix right-hand sides, limited-memory Hessian action (docs/derivations/
quasi-newton.md section 4)."""

import gc
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfqn_ref.quasi_newton import (
    GammaRule,
    SkipReason,
    bfgs_inverse_update,
    hessian_action_lbfgs_append,
    lbfgs,
    lbfgs_append,
    lbfgs_apply,
    lbfgs_compact_apply,
    lbfgs_compact_factors,
    lbfgs_init,
    lbfgs_inverse_matrix,
    lbfgs_pairs,
    lbfgs_two_loop,
)
from tests.helpers.compare import assert_close
from tests.quasi_newton.pair_streams import CURVED_KINDS, curved_stream, random_spd

seeds = st.integers(0, 2**32 - 1)


def dense_bfgs(gamma, pairs, d):
    """Expected H: gamma I updated by the pairs, oldest first, with the public dense update."""
    H = gamma * np.eye(d)
    for s, y in pairs:
        H = bfgs_inverse_update(H, s, y).H
    return H


@settings(max_examples=60)
@given(
    seed=seeds,
    d=st.integers(1, 7),
    memory=st.integers(1, 8),
    gamma=st.floats(0.1, 10.0),
    kinds=st.lists(st.sampled_from(CURVED_KINDS), min_size=1, max_size=8),
    k=st.integers(1, 3),
)
def test_two_loop_compact_and_dense_bfgs_agree_while_nothing_is_dropped(
    seed, d, memory, gamma, kinds, k
):
    """[QN-11] = [QN-12] = [QN-13] after each append, as long as at most ``memory`` pairs were
    accepted: expected from dense BFGS (bfgs_inverse_update) of gamma I over the accepted pairs.
    Rejected pairs (negative curvature, y = 0) leave the state unchanged. Also: a (d, k) matrix is
    transformed column by column."""
    rng = np.random.default_rng(seed)
    state = lbfgs_init(d, memory, gamma=gamma)
    accepted = []
    V = rng.standard_normal((d, k))
    for step, (s, y) in enumerate(curved_stream(rng, d, kinds)):
        result = lbfgs_append(state, s, y)
        assert result.accepted == (s @ y > 0)
        if not result.accepted:
            assert result.state is state and result.reason is SkipReason.NON_POSITIVE_CURVATURE
            continue
        state = result.state
        accepted.append((s, y))
        if len(accepted) > memory:
            break
        expected = dense_bfgs(gamma, accepted, d)
        where = f"step {step}"
        assert_close(lbfgs_inverse_matrix(state), expected, rtol=1e-10, what=f"{where}: dense")
        assert_close(
            lbfgs_two_loop(state, np.eye(d)), expected, rtol=1e-10, what=f"{where}: two-loop"
        )
        assert_close(
            lbfgs_compact_apply(state, np.eye(d)), expected, rtol=1e-10, what=f"{where}: compact"
        )
        for apply in (lbfgs_two_loop, lbfgs_compact_apply):
            HV = apply(state, V)
            assert HV.shape == V.shape
            columns = np.stack([apply(state, V[:, j]) for j in range(k)], axis=1)
            assert_close(HV, columns, rtol=1e-12, what=f"{where}: matrix vs columns")
            assert_close(HV, expected @ V, rtol=1e-10, what=f"{where}: H V")


def test_empty_store_is_gamma_identity():
    """No pair yet: H = gamma I in all three forms (expected: gamma I)."""
    state = lbfgs_init(3, 2, gamma=0.5)
    v = np.array([1.0, -2.0, 3.0])
    assert_close(lbfgs_two_loop(state, v), 0.5 * v, what="two-loop")
    assert_close(lbfgs_compact_apply(state, v), 0.5 * v, what="compact")
    assert_close(lbfgs_inverse_matrix(state), 0.5 * np.eye(3), what="dense")


def test_sliding_window_once_full():
    """Memory 3, seven accepted pairs: the store holds the last three, oldest first; H equals dense
    BFGS of gamma I over those three (expected) and no longer equals dense BFGS over all pairs."""
    rng = np.random.default_rng(7)
    d, memory = 5, 3
    pairs = curved_stream(rng, d, ["curved"] * 7)
    state = lbfgs_init(d, memory)
    for k, (s, y) in enumerate(pairs, start=1):
        state = lbfgs_append(state, s, y).state
        window = pairs[max(0, k - memory) : k]
        S, Y = lbfgs_pairs(state)
        assert state.count == len(window) and state.S.shape == (memory, d)
        assert np.array_equal(S, np.stack([p[0] for p in window]))
        assert np.array_equal(Y, np.stack([p[1] for p in window]))
        expected = dense_bfgs(1.0, window, d)
        for apply in (lbfgs_two_loop, lbfgs_compact_apply):
            assert_close(apply(state, np.eye(d)), expected, rtol=1e-10, what=f"pair {k}")
    all_pairs = dense_bfgs(1.0, pairs, d)
    assert np.max(np.abs(lbfgs_inverse_matrix(state) - all_pairs)) > 1e-3


def test_append_never_modifies_the_input_state():
    rng = np.random.default_rng(8)
    state = lbfgs_init(4, 2)
    for s, y in curved_stream(rng, 4, ["curved"] * 3):
        S, Y = state.S.copy(), state.Y.copy()
        new = lbfgs_append(state, s, y).state
        assert np.array_equal(state.S, S) and np.array_equal(state.Y, Y)
        assert new.S is not state.S
        state = new


def test_acceptance_rule_is_the_authors_relative_rule():
    """Accepted iff s^T y > 1e-4 (s^T s) ||gbar|| (expected from the rule's definition)."""
    state = lbfgs_init(2, 2)
    s = np.array([1.0, 0.0])
    below = lbfgs_append(state, s, np.array([1e-5, 1.0]), gbar_norm=1.0)
    assert not below.accepted and below.reason is SkipReason.BELOW_RELATIVE_THRESHOLD
    assert below.state is state
    assert lbfgs_append(state, s, np.array([1e-3, 1.0]), gbar_norm=1.0).accepted
    assert lbfgs_append(state, s, np.array([1e-5, 1.0])).accepted  # gbar_norm = 0: s^T y > 0


def test_gamma_rules():
    """FIXED keeps gamma; NEWEST_PAIR sets gamma = s^T y / y^T y of the newest ACCEPTED pair
    (expected from that formula), and a rejected pair leaves it unchanged."""
    state = lbfgs_init(2, 3, gamma=2.0)
    s, y = np.array([1.0, 1.0]), np.array([3.0, 1.0])
    assert lbfgs_append(state, s, y).state.gamma == 2.0
    auto = lbfgs_append(state, s, y, gamma_rule=GammaRule.NEWEST_PAIR).state
    assert auto.gamma == pytest.approx(4.0 / 10.0, rel=1e-15)
    rejected = lbfgs_append(auto, s, -y, gamma_rule=GammaRule.NEWEST_PAIR)
    assert not rejected.accepted and rejected.state.gamma == auto.gamma


def test_compact_factors_are_the_inverse_triangle():
    """R_inv is the inverse of triu(S Y^T) (expected: numpy.linalg.inv), D its diagonal,
    YtY = Y Y^T, after every append: while the window fills and after it slides. So are the
    factors that lbfgs_append keeps up to date for the product form [QN-13b]: A = R^-1 S, D, and
    the squared row norms of R^-1."""
    rng = np.random.default_rng(9)
    state = lbfgs_init(6, 4)
    for s, y in curved_stream(rng, 6, ["curved"] * 9):
        state = lbfgs_append(state, s, y).state
        S, Y, R_inv, D, YtY = lbfgs_compact_factors(state)
        R = np.triu(S @ Y.T)
        assert_close(R_inv, np.linalg.inv(R), rtol=1e-10, what="R^-1")
        assert_close(D, np.einsum("ij,ij->i", S, Y), rtol=1e-12, what="D")
        assert_close(YtY, Y @ Y.T, rtol=1e-12, what="Y Y^T")
        kept = lbfgs._store_factors(state)
        assert_close(kept.A, np.linalg.inv(R) @ S, rtol=1e-10, what="A = R^-1 S")
        assert_close(kept.D, D, rtol=1e-12, what="kept D")
        rows2 = (np.linalg.inv(R) ** 2).sum(axis=1)
        assert_close(kept.R_inv_rows2, rows2, rtol=1e-10, what="row norms of R^-1")
    assert state.count == 4


@pytest.mark.parametrize(("d", "memory", "appends"), [(6, 4, 9), (3, 5, 9), (12, 40, 100)])
def test_apply_is_the_dense_bfgs_matrix_in_either_form(d, memory, appends):
    """lbfgs_apply (dense H once count >= d, compact before) equals the compact form and the
    dense twin [QN-11] (expected: repeated dense BFGS updates, lbfgs_inverse_matrix) to 1e-10
    of the size of H, for vectors and matrices, after every append."""
    rng = np.random.default_rng(d + memory)
    state = lbfgs_init(d, memory, gamma=0.8)
    V = rng.standard_normal((d, 3))
    for s, y in curved_stream(rng, d, ["curved"] * appends):
        state = lbfgs_append(state, s, y).state
        H = lbfgs_inverse_matrix(state)
        scale = np.abs(H).max() * np.abs(V).max()
        for got in (lbfgs_apply(state, V), lbfgs_apply(state, V[:, 0])[:, None]):
            assert_close(got, H @ V[:, : got.shape[1]], atol=1e-10 * scale, what="apply")
        assert_close(lbfgs_compact_apply(state, V), H @ V, atol=1e-10 * scale, what="compact")
    assert state.count == min(memory, appends)


def test_float32_store_keeps_dtype():
    """float32 state, pairs and right-hand sides give float32 results that agree with the float64
    computation to float32 accuracy (rtol 1e-4)."""
    rng = np.random.default_rng(10)
    pairs = curved_stream(rng, 4, ["curved"] * 3)
    v = rng.standard_normal(4)
    state32, state64 = lbfgs_init(4, 3, dtype=np.float32), lbfgs_init(4, 3)
    for s, y in pairs:
        state32 = lbfgs_append(state32, s.astype(np.float32), y.astype(np.float32)).state
        state64 = lbfgs_append(state64, s, y).state
    for apply in (lbfgs_two_loop, lbfgs_compact_apply):
        result = apply(state32, v.astype(np.float32))
        assert result.dtype == np.float32
        assert_close(result, apply(state64, v), rtol=1e-4, what=f"float32 {apply.__name__}")
    assert lbfgs_inverse_matrix(state32).dtype == np.float32


@given(seed=seeds, d=st.integers(1, 6))
def test_limited_memory_hessian_action_recovers_m_inverse(seed, d):
    """[QN-14] With memory >= d and v chosen so that the M^{1/2} s_k are orthonormal, d
    Hessian-action appends give H = M^{-1} (expected: numpy.linalg.inv), the same with M as a
    matrix or as a callable."""
    rng = np.random.default_rng(seed)
    M = random_spd(rng, d, log10_eig=(-1, 1))
    w, V = np.linalg.eigh(M)
    root = (V * np.sqrt(w)) @ V.T
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    by_matrix = by_operator = lbfgs_init(d, d + 1, gamma=0.7)
    for k in range(d):
        s_k = np.linalg.solve(root, Q[:, k])
        v_k = np.linalg.solve(lbfgs_inverse_matrix(by_matrix), s_k)
        result = hessian_action_lbfgs_append(by_matrix, v_k, M)
        assert result.accepted
        by_matrix = result.state
        by_operator = hessian_action_lbfgs_append(by_operator, v_k, lambda u: M @ u).state
        assert_close(by_operator.S, by_matrix.S, rtol=1e-13, what="operator vs matrix M")
    assert_close(lbfgs_inverse_matrix(by_matrix), np.linalg.inv(M), rtol=1e-10, what="H vs M^-1")


def _safe_norm(v):
    """||v||_2 without under- or overflow of the squares (v / max|v| has entries <= 1)."""
    top = float(np.abs(v).max())
    return 0.0 if top == 0.0 else top * float(np.linalg.norm(v / top))


@settings(max_examples=300)
@given(
    seed=seeds,
    d=st.integers(1, 5),
    memory=st.integers(1, 3),
    log_gamma=st.floats(-3.0, 3.0),
    scales=st.lists(
        st.tuples(st.floats(-300, 300), st.floats(-300, 300), st.booleans()),
        min_size=1,
        max_size=6,
    ),
)
def test_extreme_finite_data_never_give_a_non_finite_store(seed, d, memory, log_gamma, scales):
    """Bad input ([QN-11b]): whatever finite pairs are appended (||s||, ||y|| from 1e-300 to 1e300,
    random or parallel directions), the two-loop, compact, product (lbfgs_apply) and dense forms
    of H are finite after every append (a pair that would break them is rejected with a reason,
    leaving the state unchanged). For one stored pair they agree to 1e-10 of the size of the
    terms of [QN-2], gamma (1 + ||s||^2 ||y||^2 / (s^T y)^2) + ||s||^2 / s^T y (expected: the
    dense twin)."""
    rng = np.random.default_rng(seed)
    gamma = 10.0**log_gamma
    state = lbfgs_init(d, memory, gamma=gamma)
    eye = np.eye(d)
    for log_s, log_y, parallel in scales:
        s = 10.0**log_s * rng.standard_normal(d)
        direction = s / np.abs(s).max() if parallel else rng.standard_normal(d)
        y = 10.0**log_y * direction
        result = lbfgs_append(state, s, y)
        assert (result.state is state) == (not result.accepted), result.reason
        state = result.state
        forms = {
            "dense": lbfgs_inverse_matrix(state),
            "two-loop": lbfgs_two_loop(state, eye),
            "compact": lbfgs_compact_apply(state, eye),
            "apply": lbfgs_apply(state, eye),  # product form, or its dense H once count >= d
        }
        for name, H in forms.items():
            assert np.isfinite(H).all(), f"{name} after {result.reason}"
        if state.count == 1:
            (s1,), (y1,) = lbfgs_pairs(state)
            with np.errstate(over="ignore"):
                ratio = _safe_norm(s1) / float(s1 @ y1)
                scale = gamma * (1.0 + (ratio * _safe_norm(y1)) ** 2) + ratio * _safe_norm(s1)
            for name in ("two-loop", "compact", "apply"):
                error = float(np.abs(forms[name] - forms["dense"]).max())
                assert error <= 1e-10 * scale or math.isinf(scale), name


@pytest.mark.parametrize("scale", [1e-150, 1e-160])
def test_tiny_pair_is_rejected_like_the_dense_update(scale):
    """s = y = scale e1 has s^T y > 0 but rho^2 = 1/(s^T y)^2 overflows: the dense update rejects it
    (NON_FINITE_RESULT), and so do the store, the convergent variant and (for the same rule) the
    Hessian action; H stays gamma I (expected: the input state, and gamma I in every form)."""
    from kfqn_ref.quasi_newton import bfgs_inverse_update as dense_update
    from kfqn_ref.quasi_newton import convergent_lbfgs_append

    s = np.array([scale, 0.0])
    assert dense_update(np.eye(2), s, s).reason is SkipReason.NON_FINITE_RESULT
    state = lbfgs_init(2, 3)
    for result in (
        lbfgs_append(state, s, s),
        convergent_lbfgs_append(state, s, s, mu2=0.3),
        hessian_action_lbfgs_append(state, s, np.eye(2)),
    ):
        assert not result.accepted and result.reason is SkipReason.NON_FINITE_RESULT
        assert result.state is state
    v = np.array([1.0, 2.0])
    assert np.array_equal(lbfgs_two_loop(state, v), v)
    assert np.array_equal(lbfgs_compact_apply(state, v), v)


def test_finite_store_whose_dense_products_overflow():
    """A store whose H is representable (entries ~1e146) although y^T H y (~1e320) of the dense
    formula's authors' order is not: all three forms are finite and agree (expected: dense twin,
    rtol 1e-10). Pairs from a recorded failing stream (d = 4, gamma = 462.06...)."""
    S = np.array(
        [
            [2.10639216e103, 4.06574813e105, -3.77686709e104, -1.98297420e104],
            [1.76890111e119, -1.19785408e119, 6.53694056e118, -1.39752799e119],
        ]
    )
    Y = np.array(
        [
            [6.05198621e-45, 1.16815150e-42, -1.08515157e-43, -5.69738757e-44],
            [1.36415102e73, -9.23767793e72, 5.04119428e72, -1.07775343e73],
        ]
    )
    state = lbfgs_init(4, 2, gamma=462.06455323664153)
    for s, y in zip(S, Y, strict=True):
        result = lbfgs_append(state, s, y)
        assert result.accepted
        state = result.state
    H = lbfgs_inverse_matrix(state)
    assert np.isfinite(H).all() and np.abs(H).max() > 1e140
    assert_close(lbfgs_two_loop(state, np.eye(4)), H, rtol=1e-10, what="two-loop")
    assert_close(lbfgs_compact_apply(state, np.eye(4)), H, rtol=1e-10, what="compact")


def _assert_kept_factors_equal_rebuilt(state, v):
    """The factors lbfgs_append kept for ``state`` (the fast path) are, bit for bit, those built
    from scratch for a store rebuilt from copies of its arrays (as a loaded state is), and so
    are the products lbfgs_apply gives."""
    rebuilt = state._replace(S=state.S.copy(), Y=state.Y.copy())
    kept = lbfgs._store_factors(state)
    for cached, fresh in zip(kept, lbfgs._store_factors(rebuilt), strict=True):
        np.testing.assert_array_equal(cached, fresh, strict=True)
    np.testing.assert_array_equal(lbfgs_apply(state, v), lbfgs_apply(rebuilt, v), strict=True)


@pytest.mark.parametrize(("d", "memory", "appends"), [(5, 3, 6), (12, 40, 100)])
def test_kept_factors_equal_a_fresh_computation(d, memory, appends):
    """After every append, through filling and sliding of the window: with fewer pairs than d
    (product-form apply) and, for the window of 40 pairs slid 60 times, with count >= d
    (lbfgs_apply applies the dense H). The factors of a window depend on its pairs only
    (docs/derivations/quasi-newton.md [QN-13b]), so a resumed K-BFGS(L) run is bit-identical to
    the uninterrupted one."""
    rng = np.random.default_rng(d)
    state = lbfgs_init(d, memory, gamma=0.7)
    for s, y in curved_stream(rng, d, ["curved"] * appends):
        state = lbfgs_append(state, s, y).state
        _assert_kept_factors_equal_rebuilt(state, rng.standard_normal(d))
    assert state.count == memory


def test_a_store_with_the_same_pairs_and_another_gamma_gets_its_own_dense_matrix():
    """The remembered dense H belongs to the gamma it was formed with: a copy of the store with
    another gamma (state._replace) applies its own H (expected: the dense twin of that store)."""
    rng = np.random.default_rng(12)
    state = lbfgs_init(3, 4, gamma=1.0)
    for s, y in curved_stream(rng, 3, ["curved"] * 4):
        state = lbfgs_append(state, s, y).state
    eye = np.eye(3)
    for gamma in (1.0, 5.0, 1.0):
        store = state._replace(gamma=gamma)
        assert_close(lbfgs_apply(store, eye), lbfgs_inverse_matrix(store), rtol=1e-10, what="H")


def test_remembered_factors_leave_with_their_store():
    """The cache holds an entry only while its store's arrays live: a long run that drops its
    old stores does not grow it."""
    rng = np.random.default_rng(8)
    state = lbfgs_init(2, 2)
    gc.collect()
    before = len(lbfgs._FACTORS), len(lbfgs._DENSE)
    for s, y in curved_stream(rng, 2, ["curved"] * 20):
        state = lbfgs_append(state, s, y).state
        lbfgs_apply(state, s)  # count >= d = 2 from the second append: a dense H too
    gc.collect()
    assert len(lbfgs._FACTORS) <= before[0] + 1 and len(lbfgs._DENSE) <= before[1] + 1
    del state
    gc.collect()
    assert len(lbfgs._FACTORS) <= before[0] and len(lbfgs._DENSE) <= before[1]
