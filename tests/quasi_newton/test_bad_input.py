"""Bad input to the quasi-Newton blocks, one row per case (docs/conventions.md section 10).

Each row: an id, the call, the exception type (wrong kind -> TypeError, wrong value -> ValueError,
an overflowing computation -> NonFiniteError), a pattern the message must match (it names the
argument), and the arrays that must be unchanged afterwards, compared bit for bit (the blocks are
pure: a refused call modifies none of its inputs).
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from kfqn_ref._checks import NonFiniteError
from kfqn_ref.quasi_newton import (
    GammaRule,
    bfgs_direct_update,
    bfgs_inverse_update,
    convergent_damping,
    convergent_eigenvalue_bounds,
    convergent_lbfgs_append,
    curvature_skip_reason,
    double_damping_2020,
    double_damping_2022,
    hessian_action_bfgs_update,
    hessian_action_lbfgs_append,
    hessian_action_pair,
    lbfgs_append,
    lbfgs_apply,
    lbfgs_compact_apply,
    lbfgs_compact_factors,
    lbfgs_init,
    lbfgs_inverse_matrix,
    lbfgs_pairs,
    lbfgs_two_loop,
    levenberg_marquardt_damping,
    powell_damping,
    second_damping,
)

S = np.array([1.0, 2.0, 3.0])
Y = np.array([2.0, 1.0, 1.0])
H = np.diag([1.0, 2.0, 3.0])
STATE = lbfgs_init(3, 2)
NON_SYMMETRIC = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
INDEFINITE = np.diag([1.0, -1.0, 1.0])
HUGE = np.array([1e200, 0.0, 0.0])
#: Every array a row's call receives; a refused call leaves each of them bit for bit as it was.
INPUTS = (S, Y, H, STATE.S, STATE.Y, NON_SYMMETRIC, INDEFINITE, HUGE)


class Row(NamedTuple):
    id: str
    call: Callable
    error: type
    match: str
    unchanged: tuple = INPUTS


def with_entry(array, index, value):
    """A copy of ``array`` with one entry replaced."""
    copy = array.copy()
    copy[index] = value
    return copy


#: (value, exception) for an argument that must lie in (0, 1): out of range, not finite, not real.
MU1_VALUES = [(v, ValueError) for v in (0.0, 1.0, -0.1, 1.5, math.nan, math.inf)] + [
    (v, TypeError) for v in (True, "0.2")
]
#: (value, exception) for an argument that must be > 0 and finite.
POSITIVE_VALUES = [(v, ValueError) for v in (0.0, -0.5, math.nan, math.inf)] + [
    (v, TypeError) for v in (True, "0.3", None)
]
#: (value, exception) for an integer argument that must be >= 1.
COUNT_VALUES = [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]

ROWS = [
    # --- mu1 in (0, 1) ---
    *(
        Row(f"{name}-mu1={value!r}", call, error, "mu1")
        for value, error in MU1_VALUES
        for name, call in (
            ("powell", lambda v=value: powell_damping(S, Y, H, mu1=v)),
            ("dd2020", lambda v=value: double_damping_2020(S, Y, H, eps=0.5, mu1=v)),
            ("dd2022", lambda v=value: double_damping_2022(S, Y, H, mu2=0.5, mu1=v)),
            ("convergent", lambda v=value: convergent_damping(S, Y, gamma=1.0, mu2=0.5, mu1=v)),
        )
    ),
    # --- mu2, eps, gamma > 0 ---
    *(
        Row(f"{name}={value!r}", call, error, name.split("-")[-1])
        for value, error in POSITIVE_VALUES
        for name, call in (
            ("lm-mu2", lambda v=value: levenberg_marquardt_damping(S, Y, mu2=v)),
            ("dd2022-mu2", lambda v=value: double_damping_2022(S, Y, H, mu2=v)),
            ("second-eps", lambda v=value: second_damping(S, Y, eps=v)),
            ("init-gamma", lambda v=value: lbfgs_init(3, 2, gamma=v)),
            ("convergent-gamma", lambda v=value: convergent_damping(S, Y, gamma=v, mu2=0.5)),
        )
    ),
    Row("eps>1", lambda: second_damping(S, Y, eps=1.5), ValueError, r"eps must lie in \(0, 1\]"),
    # --- memory and dim: integers >= 1 ---
    *(
        Row(f"{name}-memory={value!r}", call, error, "memory")
        for value, error in [*COUNT_VALUES, ("3", TypeError)]
        for name, call in (
            ("init", lambda v=value: lbfgs_init(3, v)),
            ("bounds", lambda v=value: convergent_eigenvalue_bounds(1.0, 0.2, 0.3, v)),
        )
    ),
    Row("init-dim=0", lambda: lbfgs_init(0, 2), ValueError, "dim must be an integer >= 1"),
    Row("init-dim=2.0", lambda: lbfgs_init(2.0, 2), TypeError, "dim must be an integer"),
    # --- H (and B, M) symmetric positive definite ---
    *(
        Row(f"{name}-{kind}", call, ValueError, f"{letter} must be {message}")
        for kind, matrix, message in (
            ("non-symmetric", NON_SYMMETRIC, "symmetric"),
            ("indefinite", INDEFINITE, "positive definite"),
        )
        for name, letter, call in (
            ("inverse", "H", lambda m=matrix: bfgs_inverse_update(m, S, Y)),
            ("powell", "H", lambda m=matrix: powell_damping(S, Y, m)),
            ("dd2020", "H", lambda m=matrix: double_damping_2020(S, Y, m, eps=0.5)),
            ("action-update", "H", lambda m=matrix: hessian_action_bfgs_update(m, S, H)),
            ("direct", "B", lambda m=matrix: bfgs_direct_update(m, S, Y)),
            ("action-pair", "M", lambda m=matrix: hessian_action_pair(H, S, m)),
        )
    ),
    Row(
        "powell-callable-not-pd",
        lambda: powell_damping(S, Y, lambda u: -u),
        ValueError,
        "H must be positive definite",
    ),
    Row(
        "action-pair-callable-wrong-length",
        lambda: hessian_action_pair(H, S, lambda u: u[:2]),
        ValueError,
        r"M applied to a vector must have shape \(3,\)",
    ),
    Row(
        "powell-callable-non-finite",
        lambda: powell_damping(S, Y, lambda u: np.full(3, np.nan)),
        ValueError,
        "H applied to a vector contains NaN or Inf",
    ),
    # --- shapes ---
    Row(
        "inverse-y-length",
        lambda: bfgs_inverse_update(H, S, Y[:2]),
        ValueError,
        "y must have shape",
    ),
    Row(
        "inverse-H-shape",
        lambda: bfgs_inverse_update(np.eye(2), S, Y),
        ValueError,
        r"H must have shape \(3, 3\)",
    ),
    Row("powell-s-2d", lambda: powell_damping(S[:, None], Y, H), ValueError, "s must have 1 dim"),
    Row(
        "append-s-length",
        lambda: lbfgs_append(STATE, S[:2], Y[:2]),
        ValueError,
        r"s must have shape \(3,\)",
    ),
    Row(
        "convergent-append-s-length",
        lambda: convergent_lbfgs_append(STATE, S[:2], Y[:2], mu2=0.5),
        ValueError,
        r"s must have shape \(3,\)",
    ),
    Row(
        "two-loop-V-length",
        lambda: lbfgs_two_loop(STATE, np.ones(4)),
        ValueError,
        r"V must have shape \(3,\) or \(3, k\)",
    ),
    Row(
        "compact-V-3d",
        lambda: lbfgs_compact_apply(STATE, np.ones((3, 2, 1))),
        ValueError,
        "V must have shape",
    ),
    Row(
        "apply-V-length",
        lambda: lbfgs_apply(STATE, np.ones(4)),
        ValueError,
        r"V must have shape \(3,\) or \(3, k\)",
    ),
    Row("apply-V-float32", lambda: lbfgs_apply(STATE, np.ones(3, np.float32)), TypeError, "V"),
    Row(
        "action-append-v-length",
        lambda: hessian_action_lbfgs_append(STATE, np.ones(2), H),
        ValueError,
        r"v must have shape \(3,\)",
    ),
    Row("action-pair-v-list", lambda: hessian_action_pair(H, [1.0, 2.0], H), TypeError, "v must"),
    # --- non-finite s, y, H ---
    *(
        Row(f"{name}-{which}={bad}", call, ValueError, f"{which} contains NaN or Inf")
        for bad in (math.nan, math.inf, -math.inf)
        for which, s, y in (
            ("s", with_entry(S, 1, bad), Y),
            ("y", S, with_entry(Y, 2, bad)),
        )
        for name, call in (
            ("inverse", lambda s=s, y=y: bfgs_inverse_update(H, s, y)),
            ("direct", lambda s=s, y=y: bfgs_direct_update(H, s, y)),
            ("powell", lambda s=s, y=y: powell_damping(s, y, H)),
            ("second", lambda s=s, y=y: second_damping(s, y, eps=0.5)),
            ("lm", lambda s=s, y=y: levenberg_marquardt_damping(s, y, mu2=0.5)),
            ("append", lambda s=s, y=y: lbfgs_append(STATE, s, y)),
            ("skip-reason", lambda s=s, y=y: curvature_skip_reason(s, y)),
        )
    ),
    Row(
        "inverse-H-nan",
        lambda: bfgs_inverse_update(with_entry(H, (0, 0), math.nan), S, Y),
        ValueError,
        "H contains NaN or Inf",
    ),
    # --- skip-rule options ---
    Row(
        "inverse-gbar-negative",
        lambda: bfgs_inverse_update(H, S, Y, gbar_norm=-1.0),
        ValueError,
        "gbar_norm must be >= 0",
    ),
    Row(
        "append-threshold-negative",
        lambda: lbfgs_append(STATE, S, Y, relative_threshold=-1e-4),
        ValueError,
        "relative_threshold must be >= 0",
    ),
    Row(
        "inverse-gbar-inf",
        lambda: bfgs_inverse_update(H, S, Y, gbar_norm=math.inf),
        ValueError,
        "gbar_norm must be finite",
    ),
    # --- dtypes are not cast silently ---
    Row(
        "inverse-y-float32",
        lambda: bfgs_inverse_update(H, S, Y.astype(np.float32)),
        TypeError,
        "y has dtype float32",
    ),
    Row(
        "inverse-H-float32",
        lambda: bfgs_inverse_update(H.astype(np.float32), S, Y),
        TypeError,
        "H has dtype float32",
    ),
    # --- overflowing pairs ---
    Row(
        "powell-damped-s-overflows",
        lambda: powell_damping(np.array([-1.0, 0.0, 0.0]), np.array([1e300, 0.0, 0.0]), 1e10 * H),
        NonFiniteError,
        "overflows",
    ),
    Row(
        "second-overflows", lambda: second_damping(HUGE, HUGE, eps=0.5), NonFiniteError, "overflows"
    ),
    # --- corrupt L-BFGS stores and options ---
    Row(
        "state-count-above-memory",
        lambda: lbfgs_two_loop(STATE._replace(count=3), S),
        ValueError,
        r"state.count must be an integer in \[0, 2\], got 3",
    ),
    Row(
        "state-Y-shape",
        lambda: lbfgs_two_loop(STATE._replace(Y=np.zeros((3, 3))), S),
        ValueError,
        "state.S and state.Y must share a shape",
    ),
    Row(
        "state-gamma-zero",
        lambda: lbfgs_compact_apply(STATE._replace(gamma=0.0), S),
        ValueError,
        "state.gamma must be > 0",
    ),
    Row(
        "state-tuple",
        lambda: lbfgs_two_loop((STATE.S, STATE.Y, 0, 1.0), S),
        TypeError,
        "state must be an? LBFGSState, got tuple",
    ),
    *(
        Row(
            f"state-count-claims-missing-pairs-{name}",
            call,
            ValueError,
            r"state.count = 1 claims stored pairs with s\^T y > 0, but pair 0 .* has s\^T y = 0.0",
        )
        for name, call in (
            ("two-loop", lambda: lbfgs_two_loop(STATE._replace(count=1), S)),
            ("compact", lambda: lbfgs_compact_apply(STATE._replace(count=1), S)),
            ("apply", lambda: lbfgs_apply(STATE._replace(count=1), S)),
            ("append", lambda: lbfgs_append(STATE._replace(count=1), S, Y)),
            ("factors", lambda: lbfgs_compact_factors(STATE._replace(count=1))),
            ("dense", lambda: lbfgs_inverse_matrix(STATE._replace(count=1))),
            ("pairs", lambda: lbfgs_pairs(STATE._replace(count=1))),
            ("action", lambda: hessian_action_lbfgs_append(STATE._replace(count=1), S, H)),
        )
    ),
    Row(
        "state-count-claims-a-negative-pair",
        lambda: lbfgs_compact_apply(
            STATE._replace(S=np.array([[1.0, 0.0, 0.0], [0.0] * 3]), Y=-np.eye(2, 3), count=1),
            S,
        ),
        ValueError,
        r"pair 0 \(row 0 of state.S and state.Y\) has s\^T y = -1.0",
    ),
    Row(
        "gamma-rule-unknown",
        lambda: lbfgs_append(STATE, S, Y, gamma_rule="newest"),
        ValueError,
        "gamma_rule must be one of 'fixed', 'newest_pair', got 'newest'",
    ),
    Row(
        "gamma-rule-int",
        lambda: lbfgs_append(STATE, S, Y, gamma_rule=1),
        TypeError,
        "gamma_rule must be a GammaRule or one of the strings",
    ),
    # --- numpy.matrix and masked arrays (their * and @ mean other things), huge integers ---
    *(
        Row(f"{name}-{kind}", call, TypeError, f"{arg} must be an array of float64 or float32")
        for kind, wrap in (("matrix", np.asmatrix), ("masked", np.ma.masked_array))
        for name, arg, call in (
            ("bfgs_inverse_update-H", "H", lambda w=wrap: bfgs_inverse_update(w(H), S, Y)),
            ("bfgs_direct_update-s", "s", lambda w=wrap: bfgs_direct_update(H, w(S), Y)),
            ("powell_damping-y", "y", lambda w=wrap: powell_damping(S, w(Y), H)),
            ("second_damping-s", "s", lambda w=wrap: second_damping(w(S), Y, eps=0.5)),
            (
                "levenberg_marquardt_damping-y",
                "y",
                lambda w=wrap: levenberg_marquardt_damping(S, w(Y), mu2=0.1),
            ),
            (
                "double_damping_2022-H",
                "H",
                lambda w=wrap: double_damping_2022(S, Y, w(H), mu1=0.2, mu2=0.1),
            ),
            ("hessian_action_pair-v", "v", lambda w=wrap: hessian_action_pair(H, w(S), H)),
        )
    ),
    Row(
        "lbfgs_init-dim-float",
        lambda: lbfgs_init(3.0, 2),
        TypeError,
        "dim must be an integer, got float 3.0",
    ),
    Row(
        "lbfgs_init-dim-bool",
        lambda: lbfgs_init(True, 2),
        TypeError,
        "dim must be an integer, got bool",
    ),
    Row(
        "lbfgs_init-memory-beyond-64-bits",
        lambda: lbfgs_init(3, 10**30),
        ValueError,
        r"memory must be an integer of magnitude <= 2\*\*63 - 1",
    ),
]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_refused(row):
    before = [array.copy() for array in row.unchanged]
    with pytest.raises(row.error, match=row.match):
        row.call()
    for old, new in zip(before, row.unchanged, strict=True):
        np.testing.assert_array_equal(new, old, strict=True)


def test_row_ids_are_unique():
    assert len({row.id for row in ROWS}) == len(ROWS)


def test_eps_of_one_is_accepted():
    """The closed end of (0, 1]: eps = 1 damps nothing for this pair and returns s itself."""
    assert second_damping(S, Y, eps=1.0).s is S


def test_powell_decides_an_overflowing_pair_on_the_scaled_products():
    """s^T y >= mu1 y^T H y for s = y = 1e200 e1, decided without forming 1e400: nothing to damp
    (the overflowing damped s of the row above is a different case)."""
    assert not powell_damping(HUGE, HUGE, np.eye(3)).damped


def test_gamma_rule_accepts_its_value_as_a_string():
    """An enum option given as its value (as a saved configuration spells it) is that member."""
    by_string = lbfgs_append(STATE, S, Y, gamma_rule="newest_pair")
    by_member = lbfgs_append(STATE, S, Y, gamma_rule=GammaRule.NEWEST_PAIR)
    assert by_string.state.gamma == by_member.state.gamma == (S @ Y) / (Y @ Y)
