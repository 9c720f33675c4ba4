"""Bad input to the quasi-Newton blocks: a ValueError (TypeError for a wrong dtype) whose message
names the argument and the expected form; a rejected call changes nothing."""

import math

import numpy as np
import pytest

from kfqn_ref.quasi_newton import (
    bfgs_direct_update,
    bfgs_inverse_update,
    convergent_damping,
    convergent_eigenvalue_bounds,
    double_damping_2020,
    double_damping_2022,
    hessian_action_bfgs_update,
    hessian_action_lbfgs_append,
    hessian_action_pair,
    lbfgs_append,
    lbfgs_compact_apply,
    lbfgs_init,
    lbfgs_two_loop,
    levenberg_marquardt_damping,
    powell_damping,
    second_damping,
)

S = np.array([1.0, 2.0, 3.0])
Y = np.array([2.0, 1.0, 1.0])
H = np.diag([1.0, 2.0, 3.0])
NON_SYMMETRIC = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
INDEFINITE = np.diag([1.0, -1.0, 1.0])
BAD_REALS = [0.0, -0.5, math.nan, math.inf, True, "0.3", None]


@pytest.mark.parametrize("mu1", [0.0, 1.0, -0.1, 1.5, math.nan, math.inf, True, "0.2"])
def test_mu1_outside_open_unit_interval(mu1):
    for call in (
        lambda: powell_damping(S, Y, H, mu1=mu1),
        lambda: double_damping_2020(S, Y, H, eps=0.5, mu1=mu1),
        lambda: double_damping_2022(S, Y, H, mu2=0.5, mu1=mu1),
        lambda: convergent_damping(S, Y, gamma=1.0, mu2=0.5, mu1=mu1),
    ):
        with pytest.raises(ValueError, match="mu1"):
            call()


@pytest.mark.parametrize("value", BAD_REALS)
def test_non_positive_mu2_eps_gamma(value):
    with pytest.raises(ValueError, match="mu2"):
        levenberg_marquardt_damping(S, Y, mu2=value)
    with pytest.raises(ValueError, match="mu2"):
        double_damping_2022(S, Y, H, mu2=value)
    with pytest.raises(ValueError, match="eps"):
        second_damping(S, Y, eps=value)
    with pytest.raises(ValueError, match="gamma"):
        lbfgs_init(3, 2, gamma=value)
    with pytest.raises(ValueError, match="gamma"):
        convergent_damping(S, Y, gamma=value, mu2=0.5)


def test_eps_above_one_is_rejected():
    """The second damping's theta is a convex weight only for eps <= 1."""
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\]"):
        second_damping(S, Y, eps=1.5)
    assert second_damping(S, Y, eps=1.0).s is S


@pytest.mark.parametrize("memory", [0, -1, 1.5, True, "3"])
def test_memory_below_one(memory):
    with pytest.raises(ValueError, match="memory"):
        lbfgs_init(3, memory)
    with pytest.raises(ValueError, match="memory"):
        convergent_eigenvalue_bounds(1.0, 0.2, 0.3, memory)


@pytest.mark.parametrize("dim", [0, 2.0])
def test_dimension_below_one(dim):
    with pytest.raises(ValueError, match="dim"):
        lbfgs_init(dim, 2)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [(NON_SYMMETRIC, "H must be symmetric"), (INDEFINITE, "H must be positive definite")],
)
def test_non_symmetric_or_non_spd_H(matrix, message):
    for call in (
        lambda: bfgs_inverse_update(matrix, S, Y),
        lambda: powell_damping(S, Y, matrix),
        lambda: double_damping_2020(S, Y, matrix, eps=0.5),
        lambda: hessian_action_bfgs_update(matrix, S, H),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=message.replace("H", "B")):
        bfgs_direct_update(matrix, S, Y)
    with pytest.raises(ValueError, match=message.replace("H", "M")):
        hessian_action_pair(H, S, matrix)


def test_callable_H_that_is_not_positive_definite_along_y():
    with pytest.raises(ValueError, match="H must be positive definite"):
        powell_damping(S, Y, lambda u: -u)


def test_callable_returning_the_wrong_shape():
    with pytest.raises(ValueError, match="M applied to a vector must have length 3"):
        hessian_action_pair(H, S, lambda u: u[:2])
    with pytest.raises(ValueError, match="H applied to a vector"):
        powell_damping(S, Y, lambda u: np.full(3, np.nan))


def test_mismatched_lengths_and_shapes():
    with pytest.raises(ValueError, match="y must have length 3"):
        bfgs_inverse_update(H, S, Y[:2])
    with pytest.raises(ValueError, match=r"H must have shape \(3, 3\)"):
        bfgs_inverse_update(np.eye(2), S, Y)
    with pytest.raises(ValueError, match="s must have 1 dimensions"):
        powell_damping(S[:, None], Y, H)
    state = lbfgs_init(3, 2)
    with pytest.raises(ValueError, match="s must have length 3"):
        lbfgs_append(state, S[:2], Y[:2])
    with pytest.raises(ValueError, match=r"V must have shape \(3,\) or \(3, k\)"):
        lbfgs_two_loop(state, np.ones(4))
    with pytest.raises(ValueError, match="V must have shape"):
        lbfgs_compact_apply(state, np.ones((3, 2, 1)))
    with pytest.raises(ValueError, match="v must have length 3"):
        hessian_action_lbfgs_append(state, np.ones(2), H)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_s_or_y(bad):
    s_bad, y_bad = S.copy(), Y.copy()
    s_bad[1], y_bad[2] = bad, bad
    state = lbfgs_init(3, 2)
    for name, args in (("s", (s_bad, Y)), ("y", (S, y_bad))):
        match = f"{name} contains NaN or Inf"
        with pytest.raises(ValueError, match=match):
            bfgs_inverse_update(H, *args)
        with pytest.raises(ValueError, match=match):
            bfgs_direct_update(H, *args)
        with pytest.raises(ValueError, match=match):
            powell_damping(*args, H)
        with pytest.raises(ValueError, match=match):
            second_damping(*args, eps=0.5)
        with pytest.raises(ValueError, match=match):
            levenberg_marquardt_damping(*args, mu2=0.5)
        with pytest.raises(ValueError, match=match):
            lbfgs_append(state, *args)
    H_bad = H.copy()
    H_bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="H contains NaN or Inf"):
        bfgs_inverse_update(H_bad, S, Y)


def test_negative_skip_rule_options():
    with pytest.raises(ValueError, match="gbar_norm must be >= 0"):
        bfgs_inverse_update(H, S, Y, gbar_norm=-1.0)
    with pytest.raises(ValueError, match="relative_threshold must be >= 0"):
        lbfgs_append(lbfgs_init(3, 2), S, Y, relative_threshold=-1e-4)
    with pytest.raises(ValueError, match="gbar_norm must be finite"):
        bfgs_inverse_update(H, S, Y, gbar_norm=math.inf)


def test_mixed_dtypes_are_not_cast_silently():
    with pytest.raises(TypeError, match="y has dtype float32"):
        bfgs_inverse_update(H, S, Y.astype(np.float32))
    with pytest.raises(TypeError, match="H has dtype float32"):
        bfgs_inverse_update(H.astype(np.float32), S, Y)


def test_overflowing_pair_in_damping_is_reported():
    huge = np.array([1e200, 0.0, 0.0])
    # Powell decides on the scaled products (s^T y >= mu1 y^T H y here): nothing to damp
    assert not powell_damping(huge, huge, np.eye(3)).damped
    # ... but H y beyond the floating-point range (here ~1e310) is reported
    with pytest.raises(ValueError, match="overflows"):
        powell_damping(np.array([-1.0, 0.0, 0.0]), np.array([1e300, 0.0, 0.0]), 1e10 * np.eye(3))
    with pytest.raises(ValueError, match="overflows"):
        second_damping(huge, huge, eps=0.5)


def test_corrupt_lbfgs_state():
    state = lbfgs_init(3, 2)
    with pytest.raises(ValueError, match="state.count must be <= p = 2"):
        lbfgs_two_loop(state._replace(count=3), S)
    with pytest.raises(ValueError, match="state.S and state.Y must share a shape"):
        lbfgs_two_loop(state._replace(Y=np.zeros((3, 3))), S)
    with pytest.raises(ValueError, match="state.gamma must be > 0"):
        lbfgs_compact_apply(state._replace(gamma=0.0), S)
    with pytest.raises(ValueError, match="state must be an LBFGSState"):
        lbfgs_two_loop((state.S, state.Y, 0, 1.0), S)
    with pytest.raises(ValueError, match="gamma_rule must be a GammaRule"):
        lbfgs_append(state, S, Y, gamma_rule="newest_pair")
