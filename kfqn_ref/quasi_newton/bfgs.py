"""BFGS updates (inverse and direct), the authors' skip rules, and the Hessian-action update.

Notation (``docs/derivations/quasi-newton.md``, equations cited as ``[QN-n]``):

=========  =======  ==========================================================================
code       symbol   meaning
=========  =======  ==========================================================================
``H``      H        inverse-Hessian approximation, ``(d, d)``, symmetric positive definite (SPD)
``B``      B        direct Hessian approximation ``B = H^{-1}``, ``(d, d)``, SPD
``s``      s        step (or its damped version), ``(d,)``
``y``      y        change of gradient (or its damped version), ``(d,)``
``rho``    rho      ``1 / (s^T y)``
``gbar``   gbar     the authors' reference vector of the relative skip rule (K-BFGS: the mean
                    output gradient of the minibatch; the mean activation on the ``A`` side)
``M``      M        a KNOWN SPD matrix whose inverse ``H`` estimates (Hessian-action BFGS)
=========  =======  ==========================================================================

Every function here is pure: inputs are never modified, results are new arrays (or, for a skipped
update, the input matrix itself), and the outcome is reported explicitly (``updated``,
``reason``). Arrays keep their dtype (float64 is the reference; float32 works) and their array
module (:func:`kfqn_ref.backend.xp_of`). Each public function checks its arguments once; the public
functions that trusted callers (K-BFGS) need have a core ``*_unchecked`` right below them;
``bfgs_inverse_formula`` is unchecked by design.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import (
    check_curvature_pair,
    check_non_negative,
    check_spd,
    check_spd_operator,
    check_square_matrix,
    check_vector,
)
from kfqn_ref.backend import Array, host_bool, host_scalar, xp_of

#: The authors' relative skip threshold: skip when ``s^T y <= 1e-4 (s^T s) ||gbar||``
#: (``kbfgs_utils.get_BFGS_formula`` and ``Kron_LBFGS_append_s_y``, written ``10**(-4)`` there).
AUTHORS_RELATIVE_THRESHOLD = 1e-4


class SkipReason(enum.Enum):
    """Why a BFGS update (or an L-BFGS append) was skipped; ``NONE`` when it was applied.

    The authors' integer statuses for the same cases: ``docs/derivations/quasi-newton.md`` [QN-5].
    """

    NONE = "none"
    #: ``s^T y`` or ``s^T s`` overflowed or is NaN (or, for ``GammaRule.NEWEST_PAIR``, ``y^T y``
    #: overflowed or underflowed to 0): the curvature test itself is meaningless.
    NON_FINITE_INNER_PRODUCT = "non_finite_inner_product"
    #: ``s^T y <= 0``: the update would not stay positive definite [QN-4].
    NON_POSITIVE_CURVATURE = "non_positive_curvature"
    #: ``0 < s^T y <= relative_threshold * (s^T s) * ||gbar||`` (the authors' rule) [QN-5].
    BELOW_RELATIVE_THRESHOLD = "below_relative_threshold"
    #: The formula overflowed (an entry of the new matrix is Inf or NaN); the old matrix is kept.
    NON_FINITE_RESULT = "non_finite_result"


class BFGSUpdate(NamedTuple):
    """Result of :func:`bfgs_inverse_update` / :func:`hessian_action_bfgs_update`.

    ``H`` is the updated inverse approximation, or the input ``H`` itself when skipped;
    ``updated`` is ``reason is SkipReason.NONE``.
    """

    H: object
    updated: bool
    reason: SkipReason


class DirectBFGSUpdate(NamedTuple):
    """Result of :func:`bfgs_direct_update`: the updated ``B`` (or the input ``B`` when skipped)."""

    B: object
    updated: bool
    reason: SkipReason


class CurvaturePair(NamedTuple):
    """A pair ``(s, y)``, both ``(d,)``, as fed to a BFGS update."""

    s: object
    y: object


# --- Skip rule ---


def curvature_skip_reason(
    s: Array,
    y: Array,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
) -> SkipReason:
    """Return why the pair ``(s, y)`` must be skipped, or ``SkipReason.NONE`` to use it.

    The authors' rule [QN-5] (``get_BFGS_formula``; its complement is the acceptance rule of
    ``Kron_LBFGS_append_s_y``)::

        skip  if  s^T y <= 0                                            (NON_POSITIVE_CURVATURE)
        skip  if  s^T y <= relative_threshold * (s^T s) * gbar_norm    (BELOW_RELATIVE_THRESHOLD)

    A pair whose inner products are not finite is skipped first (``NON_FINITE_INNER_PRODUCT``).
    ``s, y``: finite ``(d,)`` of one dtype; ``gbar_norm = ||gbar||_2 >= 0`` (``0``, the default,
    leaves plain positivity of ``s^T y``); ``relative_threshold >= 0`` (the authors' ``1e-4``).
    """
    check_curvature_pair(s, y)
    return curvature_skip_reason_unchecked(
        s,
        y,
        gbar_norm=check_non_negative("gbar_norm", gbar_norm),
        relative_threshold=check_non_negative("relative_threshold", relative_threshold),
    )


def curvature_skip_reason_unchecked(
    s: Array, y: Array, *, gbar_norm: float, relative_threshold: float
) -> SkipReason:
    """As :func:`curvature_skip_reason`, without argument checks (for trusted callers)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported as a reason
        s_dot_y = host_scalar(s @ y)  # the skip rule branches on them (docs/backends.md)
        s_dot_s = host_scalar(s @ s)
    if not (math.isfinite(s_dot_y) and math.isfinite(s_dot_s)):
        return SkipReason.NON_FINITE_INNER_PRODUCT
    if s_dot_y <= 0.0:
        return SkipReason.NON_POSITIVE_CURVATURE
    if s_dot_y <= relative_threshold * s_dot_s * gbar_norm:
        return SkipReason.BELOW_RELATIVE_THRESHOLD
    return SkipReason.NONE


# --- BFGS updates ---


def bfgs_inverse_formula(H: Array, s: Array, y: Array) -> Array:
    """Return the BFGS inverse update without checks (callers must ensure ``s^T y > 0``).

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` [QN-1], evaluated in the expanded form
    [QN-2] with the coefficients of the authors' ``get_BFGS_formula``::

        H+ = H + (rho^2 y^T H y + rho) s s^T - rho (s (Hy)^T + (Hy) s^T),   rho = 1 / (s^T y)

    written as one symmetric rank-2 term [QN-2b]: ``H+ = H + (s v^T + v s^T)`` with
    ``v = (rho^2 y^T H y + rho) s / 2 - rho Hy``, so that ``H+`` is exactly symmetric when ``H`` is,
    in four passes over ``(d, d)`` arrays. An overflow gives a non-finite ``H+``, which
    :func:`bfgs_inverse_update` rejects (``NON_FINITE_RESULT``). Shapes: ``H (d, d)``,
    ``s, y (d,)``.
    """
    xp = xp_of(H, s, y)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected by the caller
        rho = 1.0 / (s @ y)
        Hy = H @ y
        v = (0.5 * (rho * rho * (y @ Hy) + rho)) * s - rho * Hy
        return H + (xp.outer(s, v) + xp.outer(v, s))


def bfgs_inverse_update(
    H: Array,
    s: Array,
    y: Array,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
) -> BFGSUpdate:
    """BFGS update of an inverse-Hessian approximation with the authors' skip rules.

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` [QN-1], so that ``H+ y = s`` (secant,
    [QN-3]); ``H+`` is SPD whenever ``H`` is and ``s^T y > 0`` [QN-4]. The update is skipped,
    returning the input ``H``, by :func:`curvature_skip_reason` [QN-5] and when the new matrix
    would contain Inf or NaN (``NON_FINITE_RESULT``): the result is never non-finite.

    ``H``: ``(d, d)`` SPD (symmetric to ``sqrt(eps)`` relative, Cholesky succeeds), float64 or
    float32; ``s, y``: finite ``(d,)`` of its dtype; ``gbar_norm``, ``relative_threshold``: the
    relative skip rule [QN-5] (the authors pass ``||gbar||``, see ``docs/derivations/
    quasi-newton.md``). Returns ``BFGSUpdate(H, updated, reason)``.
    """
    check_curvature_pair(s, y)
    check_spd("H", check_square_matrix("H", H, s.shape[0], dtype=s.dtype))
    return bfgs_inverse_update_unchecked(
        H,
        s,
        y,
        gbar_norm=check_non_negative("gbar_norm", gbar_norm),
        relative_threshold=check_non_negative("relative_threshold", relative_threshold),
    )


def bfgs_inverse_update_unchecked(
    H: Array, s: Array, y: Array, *, gbar_norm: float, relative_threshold: float
) -> BFGSUpdate:
    """As :func:`bfgs_inverse_update`, without argument checks (for trusted callers)."""
    reason = curvature_skip_reason_unchecked(
        s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold
    )
    if reason is not SkipReason.NONE:
        return BFGSUpdate(H, False, reason)
    H_new = bfgs_inverse_formula(H, s, y)
    if not host_bool(xp_of(H_new).isfinite(H_new).all()):
        return BFGSUpdate(H, False, SkipReason.NON_FINITE_RESULT)
    return BFGSUpdate(H_new, True, SkipReason.NONE)


def bfgs_direct_update(
    B: Array,
    s: Array,
    y: Array,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
) -> DirectBFGSUpdate:
    """BFGS update of a direct Hessian approximation ``B`` (``= H^{-1}``).

    ``B+ = B - B s s^T B / (s^T B s) + y y^T / (s^T y)`` [QN-6], with the skip rules of
    :func:`bfgs_inverse_update`, and ``B+ = (H+)^{-1}`` when ``B = H^{-1}`` [QN-7].
    Shapes: ``B (d, d)`` SPD, ``s, y (d,)``. Returns ``DirectBFGSUpdate(B, updated, reason)``.
    """
    reason = curvature_skip_reason(  # checks s, y and the skip rule's parameters
        s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold
    )
    check_spd("B", check_square_matrix("B", B, s.shape[0], dtype=s.dtype))
    if reason is not SkipReason.NONE:
        return DirectBFGSUpdate(B, False, reason)
    xp = xp_of(B, s, y)
    Bs = B @ s
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected just below
        B_new = B + xp.outer(y, y) / (s @ y) - xp.outer(Bs, Bs) / (s @ Bs)
    if not host_bool(xp.all(xp.isfinite(B_new))):
        return DirectBFGSUpdate(B, False, SkipReason.NON_FINITE_RESULT)
    return DirectBFGSUpdate(B_new, True, SkipReason.NONE)


# --- Hessian-action BFGS ---


def apply_operator(A: Array | Callable, u: Array) -> Array:
    """``A u`` for ``A`` a matrix ``(d, d)`` or a callable ``u -> A u``."""
    return A(u) if callable(A) else A @ u


def hessian_action_pair(H: Array | Callable, v: Array, M: Array | Callable) -> CurvaturePair:
    """Return the Hessian-action pair for a KNOWN SPD ``M``: ``s = H v``, ``y = M s`` [QN-8].

    ``H``: ``(d, d)`` SPD or a callable ``u -> H u`` (e.g. an L-BFGS operator); ``v``: ``(d,)``
    (K-BFGS: the minibatch-mean homogeneous activation ``abar``); ``M``: ``(d, d)`` SPD or a
    callable, so that ``M`` is never formed (e.g. ``u -> (1/N) sum_n a_n (a_n^T u) + lambda u``).
    Returns ``CurvaturePair(s, y)``, both ``(d,)``; ``s^T y = s^T M s > 0`` unless ``s = 0``.
    A callable's results are checked at every call.
    """
    check_vector("v", v)
    return hessian_action_pair_unchecked(
        check_spd_operator("H", H, v.shape[0], v.dtype),
        v,
        check_spd_operator("M", M, v.shape[0], v.dtype),
    )


def hessian_action_pair_unchecked(
    H: Array | Callable, v: Array, M: Array | Callable
) -> CurvaturePair:
    """As :func:`hessian_action_pair`, without argument checks (for trusted callers)."""
    s = apply_operator(H, v)
    return CurvaturePair(s, apply_operator(M, s))


def hessian_action_bfgs_update(
    H: Array,
    v: Array,
    M: Array | Callable,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
) -> BFGSUpdate:
    """Hessian-action BFGS: ``s = H v``, ``y = M s``, then :func:`bfgs_inverse_update`.

    Maintains ``H ~ M^{-1}`` without inverting ``M`` [QN-8]. In the metric of ``M``
    (``K = M^{1/2} H M^{1/2}``, ``u = M^{1/2} s``) the update is the projection
    ``K+ = P K P + (I - P)``, ``P = I - u u^T / (u^T u)`` [QN-9]: with ``M`` fixed the eigenvalues
    of ``K`` stay in ``[min(lambda_min(K), 1), max(lambda_max(K), 1)]`` [QN-10] and ``H+ M s = s``.

    ``H``: ``(d, d)`` SPD (the matrix updated); ``v``: ``(d,)``; ``M``: ``(d, d)`` SPD or a
    callable ``u -> M u``; ``gbar_norm``, ``relative_threshold``: as in
    :func:`bfgs_inverse_update` (the authors' 2020 code passes ``gbar_norm = ||v||``).
    Returns ``BFGSUpdate(H, updated, reason)``.
    """
    check_vector("v", v)
    check_spd("H", check_square_matrix("H", H, v.shape[0], dtype=v.dtype))
    M = check_spd_operator("M", M, v.shape[0], v.dtype)
    gbar_norm = check_non_negative("gbar_norm", gbar_norm)
    relative_threshold = check_non_negative("relative_threshold", relative_threshold)
    s, y = hessian_action_pair_unchecked(H, v, M)
    return bfgs_inverse_update_unchecked(
        H, s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold
    )
