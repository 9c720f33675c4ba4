"""The convergent variant (SdLBFGS style) and its eigenvalue bounds.

``docs/derivations/convergence.md`` states the theorem and derives the bounds cited here as
``[CV-n]``. The variant differs from the practical K-BFGS(L) in two places:

1. Powell damping is taken with respect to the FIXED initial matrix ``H_0 = gamma I`` (not the
   current ``H``), then Levenberg–Marquardt damping ``y <- y + mu2 s`` (:func:`convergent_damping`);
2. the L-BFGS store keeps ``gamma`` fixed (``GammaRule.FIXED``), accepts a pair with
   ``s^T y > 0`` unless it would make the store non-representable (``NON_FINITE_RESULT``,
   [QN-11b]), and holds at most ``p`` pairs (:func:`convergent_lbfgs_append`).

Then every damped pair lies in the ball ``||y - c s|| <= rho ||s||``, ``c = rho + mu2``,
``rho = 1 / (2 mu1 gamma)`` [CV-10]; hence ``s^T y >= mu2 s^T s`` and ``||y||^2 <= C s^T y``
with the tight ``C = 1 / (mu1 gamma) + mu2`` [CV-3, CV-4], and every matrix the store represents
satisfies ``kappa_lo I <= H <= kappa_hi I`` with the constants of
:func:`convergent_eigenvalue_bounds` [CV-7, CV-8], whatever the pairs fed in (negative curvature
included).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from kfqn_ref._checks import check_curvature_pair, check_in_interval, check_int, check_positive
from kfqn_ref.backend import Array
from kfqn_ref.quasi_newton.damping import (
    AUTHORS_MU1,
    DoubleDampedPair,
    double_damping_2022_unchecked,
)
from kfqn_ref.quasi_newton.lbfgs import (
    LBFGSAppend,
    LBFGSState,
    check_lbfgs_state,
    lbfgs_append_unchecked,
)


class EigenvalueBounds(NamedTuple):
    """``kappa_lo I <= H <= kappa_hi I`` for every ``H`` of the convergent variant."""

    kappa_lo: float
    kappa_hi: float


def curvature_constant(gamma: float, mu1: float, mu2: float) -> float:
    """``C = 1 / (mu1 gamma) + mu2``: ``||y||^2 <= C s^T y`` for every damped pair [CV-4].

    The supremum of ``||y||^2 / s^T y`` over damped pairs, attained by ``y = s / (mu1 gamma)``.
    ``inf`` when ``1 / (mu1 gamma)`` overflows.
    """
    return curvature_constant_unchecked(
        check_positive("gamma", gamma),
        check_in_interval("mu1", mu1, 0.0, 1.0),
        check_positive("mu2", mu2),
    )


def curvature_constant_unchecked(gamma: float, mu1: float, mu2: float) -> float:
    """As :func:`curvature_constant`, without argument checks (for trusted callers)."""
    return _inverse_product(mu1, gamma) + mu2


def convergent_eigenvalue_bounds(
    gamma: float, mu1: float, mu2: float, memory: int
) -> EigenvalueBounds:
    """Explicit ``(kappa_lo, kappa_hi)`` for the convergent variant with ``p = memory`` pairs.

    ::

        kappa_lo = 1 / (1/gamma + p C)                                            [CV-7]
        kappa_hi = h_p,  h_0 = gamma,  h_{j+1} = P h_j + (c + 1 / (4 h_j)) / (mu2 C)  [CV-8]

    with ``C`` of :func:`curvature_constant`, ``c = (C + mu2) / 2`` and ``P = c^2 / (mu2 C)``,
    the supremum of ``(||s||^2 / s^T y) (||y||^2 / s^T y)`` over damped pairs [CV-11]. Both hold
    for any ``q <= p`` stored pairs (the bounds are monotone in ``p``). Never NaN: ``kappa_lo`` is
    ``0`` where the true value underflows and ``kappa_hi`` is ``inf`` where it exceeds the
    floating-point range (``docs/derivations/convergence.md``).
    """
    gamma = check_positive("gamma", gamma)
    mu1 = check_in_interval("mu1", mu1, 0.0, 1.0)
    mu2 = check_positive("mu2", mu2)
    memory = check_int("memory", memory, minimum=1)
    C = curvature_constant_unchecked(gamma, mu1, mu2)  # inf when it overflows
    kappa_lo = 1.0 / (1.0 / gamma + memory * C)  # 0 where the true value underflows
    c_over_C = 0.5 * (1.0 + mu2 / C)  # c / C, in (1/2, 1]
    product = c_over_C * 0.5 * (C / mu2 + 1.0)  # P = (c / C) (c / mu2), inf if C / mu2 is
    h = gamma
    for _ in range(memory):  # h >= gamma and h C >= 1 / mu1: no NaN, no division by zero
        h = product * h + (c_over_C + 0.25 / (h * C)) / mu2  # [CV-12]
        if math.isinf(h):  # the bound is then vacuous, but still a bound
            break
    return EigenvalueBounds(kappa_lo, h)


def convergent_damping(
    s: Array, y: Array, *, gamma: float, mu2: float, mu1: float = AUTHORS_MU1
) -> DoubleDampedPair:
    """Powell damping with respect to ``H_0 = gamma I`` [CV-1], then LM damping [CV-2].

    ::

        if s^T y < mu1 gamma y^T y:   theta = (1 - mu1) gamma y^T y / (gamma y^T y - s^T y)
                                      s <- theta s + (1 - theta) gamma y
        y <- y + mu2 s

    Guarantees [CV-3, CV-4]: ``s^T y >= mu2 s^T s`` and ``||y||^2 <= C s^T y``. Shapes ``(d,)``;
    returns ``DoubleDampedPair(s, y, powell_damped, second_damped=True)`` (``second_damped``: the
    LM step acted, always).
    """
    check_curvature_pair(s, y)
    gamma = check_positive("gamma", gamma)
    mu2 = check_positive("mu2", mu2)
    mu1 = check_in_interval("mu1", mu1, 0.0, 1.0)
    return convergent_damping_unchecked(s, y, gamma=gamma, mu2=mu2, mu1=mu1)


def convergent_damping_unchecked(
    s: Array, y: Array, *, gamma: float, mu2: float, mu1: float
) -> DoubleDampedPair:
    """As :func:`convergent_damping`, without argument checks (for trusted callers)."""
    return double_damping_2022_unchecked(s, y, lambda u: gamma * u, mu2=mu2, mu1=mu1)


def convergent_lbfgs_append(
    state: LBFGSState, s: Array, y: Array, *, mu2: float, mu1: float = AUTHORS_MU1
) -> LBFGSAppend:
    """Damp ``(s, y)`` by :func:`convergent_damping` (``gamma = state.gamma``), then append it.

    :func:`lbfgs_append` with a fixed ``gamma``: accepted iff ``s^T y > 0`` and the store stays
    representable [QN-11b] (the rejections: ``docs/derivations/convergence.md``).
    """
    check_lbfgs_state(state)
    check_curvature_pair(s, y, dim=state.S.shape[1], dtype=state.S.dtype)
    mu2 = check_positive("mu2", mu2)
    mu1 = check_in_interval("mu1", mu1, 0.0, 1.0)
    pair = convergent_damping_unchecked(s, y, gamma=state.gamma, mu2=mu2, mu1=mu1)
    return lbfgs_append_unchecked(state, pair.s, pair.y)  # s^T y > 0, gamma fixed


def _inverse_product(a: float, b: float) -> float:
    """Return ``1 / (a b)`` for ``a, b > 0``, evaluated as ``(1/a) / b``.

    ``a b`` is never formed, so where it would underflow the result is ``inf`` (a float division
    overflows to ``inf``), not a ``ZeroDivisionError``.
    """
    return (1.0 / a) / b
