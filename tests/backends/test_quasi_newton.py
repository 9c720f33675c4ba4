"""Quasi-Newton blocks give the NumPy results bit for bit on the strict backend."""

import numpy as np
import pytest

from kfqn_ref import quasi_newton as qn
from tests.backends.conftest import assert_same, numpy_reference
from tests.quasi_newton.pair_streams import random_spd

D = 5
RNG = np.random.default_rng(0)
H = random_spd(RNG, D)
S = RNG.standard_normal(D)
#: (id, y): a pair of positive curvature, one of negative curvature, and y = 0.
PAIRS = [
    ("positive", H @ S + 0.1 * RNG.standard_normal(D)),
    ("negative", -S + 0.01 * RNG.standard_normal(D)),
    ("zero-y", np.zeros(D)),
]
PAIR_IDS = [row[0] for row in PAIRS]


@pytest.mark.parametrize("y", [row[1] for row in PAIRS], ids=PAIR_IDS)
@pytest.mark.parametrize(
    "update", [qn.bfgs_inverse_update, qn.bfgs_direct_update], ids=["inverse", "direct"]
)
def test_bfgs_updates_equal_numpy(on, update, y):
    expected = update(H, S, y, gbar_norm=0.5)
    assert_same(on.call(update, H, S, y, gbar_norm=0.5), expected)


def test_hessian_action_bfgs_update_with_a_callable_m_equals_numpy(on):
    M = random_spd(np.random.default_rng(1), D)

    def run(H, v, M):
        return qn.hessian_action_bfgs_update(H, v, lambda u: M @ u, gbar_norm=0.1)

    assert_same(on.call(run, H, S, M), run(H, S, M))


@pytest.mark.parametrize("y", [row[1] for row in PAIRS], ids=PAIR_IDS)
@pytest.mark.parametrize(
    "damping",
    [
        lambda s, y, H: qn.powell_damping(s, y, H),
        lambda s, y, H: qn.powell_damping(s, y, lambda u: H @ u),
        lambda s, y, H: qn.second_damping(s, y, eps=0.3),
        lambda s, y, H: qn.levenberg_marquardt_damping(s, y, mu2=0.3),
        lambda s, y, H: qn.double_damping_2020(s, y, H, eps=0.3),
        lambda s, y, H: qn.double_damping_2022(s, y, lambda u: H @ u, mu2=0.3),
    ],
    ids=["powell", "powell-callable", "second", "lm", "dd-2020", "dd-2022"],
)
def test_dampings_equal_numpy(on, damping, y):
    assert_same(on.call(damping, S, y, H), damping(S, y, H))


def _lbfgs_run(xp_array, pairs, V, gamma_rule):
    """Appends (some rejected, more than the memory), then every product of the store."""
    state = qn.lbfgs_init(D, 3, gamma=0.5)
    results = []
    for s, y in pairs:
        appended = qn.lbfgs_append(
            state, xp_array(s), xp_array(y), gbar_norm=0.01, gamma_rule=gamma_rule
        )
        state = appended.state
        results.append((appended.accepted, appended.reason, state.count, state.gamma))
    V = xp_array(V)
    products = (
        qn.lbfgs_two_loop(state, V),
        qn.lbfgs_compact_apply(state, V),
        qn.lbfgs_inverse_matrix(state),
        *qn.lbfgs_pairs(state),
        *qn.lbfgs_compact_factors(state),
        qn.hessian_action_lbfgs_append(state, V[:, 0], lambda u: 2.0 * u).state,
    )
    return tuple(results), products


@pytest.mark.parametrize("gamma_rule", list(qn.GammaRule), ids=lambda rule: rule.value)
def test_lbfgs_store_and_products_equal_numpy(on, gamma_rule):
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(6):
        s = rng.standard_normal(D)
        pairs.append((s, H @ s + 0.1 * rng.standard_normal(D)))
    pairs.insert(2, (S, PAIRS[1][1]))  # rejected: negative curvature
    V = rng.standard_normal((D, 2))
    expected = numpy_reference(_lbfgs_run, np.array, pairs, V, gamma_rule)
    got = on.host(_lbfgs_run(on.array, pairs, V, gamma_rule))
    assert_same(got, expected)
