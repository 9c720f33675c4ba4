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
module (:func:`kfqn_ref.backend.xp_of`).
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import check_float_array
from kfqn_ref.backend import xp_of

#: The authors' relative skip threshold: skip when ``s^T y <= 1e-4 (s^T s) ||gbar||``
#: (``kbfgs_utils.get_BFGS_formula`` and ``Kron_LBFGS_append_s_y``, written ``10**(-4)`` there).
AUTHORS_RELATIVE_THRESHOLD = 1e-4


class SkipReason(enum.Enum):
    """Why a BFGS update (or an L-BFGS append) was skipped; ``NONE`` when it was applied.

    The authors' ``get_BFGS_formula`` returns integer statuses; the correspondence is
    ``0 -> NONE``, ``1 -> NON_POSITIVE_CURVATURE``, ``2 -> BELOW_RELATIVE_THRESHOLD``,
    ``4 -> NON_FINITE_RESULT``.
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


# ---------------------------------------------------------------------------------------------
# Skip rule
# ---------------------------------------------------------------------------------------------


def curvature_skip_reason(
    s, y, *, gbar_norm: float = 0.0, relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD
) -> SkipReason:
    """Return why the pair ``(s, y)`` must be skipped, or ``SkipReason.NONE`` to use it.

    The authors' rule [QN-5] (``get_BFGS_formula``; its complement is the acceptance rule of
    ``Kron_LBFGS_append_s_y``)::

        skip  if  s^T y <= 0                                            (NON_POSITIVE_CURVATURE)
        skip  if  s^T y <= relative_threshold * (s^T s) * gbar_norm    (BELOW_RELATIVE_THRESHOLD)

    With ``gbar_norm = 0`` (the default, and what the authors pass on the L-BFGS ``A`` side) the
    rule is plain positivity of the curvature ``s^T y``. A pair whose inner products are not
    finite is skipped first (``NON_FINITE_INNER_PRODUCT``).

    Parameters
    ----------
    s, y
        arrays ``(d,)``, already validated by the caller.
    gbar_norm
        ``||gbar||_2 >= 0``, the norm of the authors' reference vector.
    relative_threshold
        ``>= 0``; the authors use ``1e-4`` (:data:`AUTHORS_RELATIVE_THRESHOLD`).

    """
    check_nonnegative("gbar_norm", gbar_norm)
    check_nonnegative("relative_threshold", relative_threshold)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported as a reason
        s_dot_y = float(s @ y)
        s_dot_s = float(s @ s)
    if not (math.isfinite(s_dot_y) and math.isfinite(s_dot_s)):
        return SkipReason.NON_FINITE_INNER_PRODUCT
    if s_dot_y <= 0.0:
        return SkipReason.NON_POSITIVE_CURVATURE
    if s_dot_y <= relative_threshold * s_dot_s * gbar_norm:
        return SkipReason.BELOW_RELATIVE_THRESHOLD
    return SkipReason.NONE


# ---------------------------------------------------------------------------------------------
# BFGS updates
# ---------------------------------------------------------------------------------------------


def bfgs_inverse_formula(H, s, y):
    """Return the BFGS inverse update without checks (callers must ensure ``s^T y > 0``).

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` [QN-1].

    Evaluated in the expanded form [QN-2] (``O(d^2)``, exactly symmetric when ``H`` is), with the
    coefficients in the authors' order (``get_BFGS_formula``)::

        H+ = H + (rho^2 y^T H y + rho) s s^T - rho (s (Hy)^T + (Hy) s^T),   rho = 1 / (s^T y)

    so that it overflows exactly where theirs does: a tiny ``s^T y`` (``rho^2 = inf``) gives an
    Inf or NaN entry, which :func:`bfgs_inverse_update` rejects (``NON_FINITE_RESULT``).
    Shapes: ``H (d, d)``, ``s, y (d,)``.
    """
    xp = xp_of(H, s, y)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected by the caller
        rho = 1.0 / (s @ y)
        Hy = H @ y
        return (
            H
            + (rho * rho * (y @ Hy) + rho) * xp.outer(s, s)
            - rho * (xp.outer(s, Hy) + xp.outer(Hy, s))
        )


def bfgs_inverse_update(
    H,
    s,
    y,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
    check_spd: bool = True,
) -> BFGSUpdate:
    """BFGS update of an inverse-Hessian approximation with the authors' skip rules.

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` [QN-1], so that ``H+ y = s`` (secant,
    [QN-3]); ``H+`` is SPD whenever ``H`` is and ``s^T y > 0`` [QN-4]. The update is skipped,
    returning the input ``H`` unchanged, by :func:`curvature_skip_reason` [QN-5] and when the
    new matrix would contain Inf or NaN (``NON_FINITE_RESULT``); the result is never non-finite.

    Parameters
    ----------
    H
        array ``(d, d)``, symmetric positive definite, float64 or float32.
    s, y
        arrays ``(d,)`` of the same dtype, finite.
    gbar_norm, relative_threshold
        the relative skip rule [QN-5]; ``gbar_norm = 0`` disables it.
        The authors' 2020 code passes ``||gbar||`` with ``gbar`` the minibatch-mean output
        gradient (``G`` side) or the minibatch-mean homogeneous activation (``A`` side).
    check_spd
        verify that ``H`` is symmetric (to ``sqrt(eps)`` relative) and positive definite
        (a Cholesky factorisation, ``O(d^3)``); switch off only for an ``H`` produced by earlier
        accepted updates of an SPD matrix.

    Returns
    -------
    BFGSUpdate(H, updated, reason)

    Raises
    ------
    ValueError
        Non-finite or mismatched ``s``, ``y``, ``H``; ``H`` not symmetric or not positive definite;
        a negative ``gbar_norm`` or ``relative_threshold``.

    """
    check_pair(s, y)
    check_matrix("H", H, s.shape[0], s.dtype, check_spd=check_spd)
    reason = curvature_skip_reason(s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold)
    if reason is not SkipReason.NONE:
        return BFGSUpdate(H, False, reason)
    H_new = bfgs_inverse_formula(H, s, y)
    if not bool(xp_of(H_new).all(xp_of(H_new).isfinite(H_new))):
        return BFGSUpdate(H, False, SkipReason.NON_FINITE_RESULT)
    return BFGSUpdate(H_new, True, SkipReason.NONE)


def bfgs_direct_update(
    B,
    s,
    y,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
    check_spd: bool = True,
) -> DirectBFGSUpdate:
    """BFGS update of a direct Hessian approximation ``B`` (``= H^{-1}``).

    ``B+ = B - B s s^T B / (s^T B s) + y y^T / (s^T y)`` [QN-6], with the same skip rules as
    :func:`bfgs_inverse_update`, and ``B+ = (H+)^{-1}`` when ``B = H^{-1}`` [QN-7].
    Shapes: ``B (d, d)`` SPD, ``s, y (d,)``. Returns ``DirectBFGSUpdate(B, updated, reason)``;
    raises ``ValueError`` as :func:`bfgs_inverse_update`.
    """
    check_pair(s, y)
    check_matrix("B", B, s.shape[0], s.dtype, check_spd=check_spd)
    reason = curvature_skip_reason(s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold)
    if reason is not SkipReason.NONE:
        return DirectBFGSUpdate(B, False, reason)
    xp = xp_of(B, s, y)
    Bs = B @ s
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected just below
        B_new = B + xp.outer(y, y) / (s @ y) - xp.outer(Bs, Bs) / (s @ Bs)
    if not bool(xp.all(xp.isfinite(B_new))):
        return DirectBFGSUpdate(B, False, SkipReason.NON_FINITE_RESULT)
    return DirectBFGSUpdate(B_new, True, SkipReason.NONE)


# ---------------------------------------------------------------------------------------------
# Hessian-action BFGS
# ---------------------------------------------------------------------------------------------


def hessian_action_pair(H, v, M, *, check_spd: bool = True) -> CurvaturePair:
    """Return the Hessian-action pair for a KNOWN SPD ``M``: ``s = H v``, ``y = M s`` [QN-8].

    Parameters
    ----------
    H
        array ``(d, d)`` SPD, or a callable ``u -> H u`` (e.g. an L-BFGS operator).
    v
        array ``(d,)``; K-BFGS uses the minibatch-mean homogeneous activation ``abar``.
    M
        array ``(d, d)`` SPD, or a callable ``u -> M u`` so that ``M`` is never formed (e.g.
        ``u -> (1/N) sum_n a_n (a_n^T u) + lambda u``).
    check_spd
        verify symmetry and positive definiteness of matrix arguments.

    Returns
    -------
    CurvaturePair(s, y), both ``(d,)``; ``s^T y = s^T M s > 0`` unless ``s = 0``.

    """
    check_vector("v", v)
    apply_H = as_operator("H", H, v.shape[0], v.dtype, check_spd=check_spd)
    apply_M = as_operator("M", M, v.shape[0], v.dtype, check_spd=check_spd)
    s = apply_H(v)
    return CurvaturePair(s, apply_M(s))


def hessian_action_bfgs_update(
    H,
    v,
    M,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
    check_spd: bool = True,
) -> BFGSUpdate:
    """Hessian-action BFGS: ``s = H v``, ``y = M s``, then :func:`bfgs_inverse_update`.

    Maintains ``H ~ M^{-1}`` without inverting ``M`` [QN-8]. In the metric of ``M``
    (``K = M^{1/2} H M^{1/2}``, ``u = M^{1/2} s``) the update is the projection
    ``K+ = P K P + (I - P)``, ``P = I - u u^T / (u^T u)`` [QN-9]: with ``M`` fixed the eigenvalues
    of ``K`` stay in ``[min(lambda_min(K), 1), max(lambda_max(K), 1)]`` [QN-10] and ``H+ M s = s``.

    Parameters
    ----------
    H
        array ``(d, d)`` SPD (the matrix that is updated).
    v
        array ``(d,)``.
    M
        array ``(d, d)`` SPD or a callable ``u -> M u``.
    gbar_norm, relative_threshold, check_spd
        as in :func:`bfgs_inverse_update`; the authors'
        2020 code passes ``gbar_norm = ||v||`` (their ``mean_h_l`` is both ``v`` and ``g_k``).

    Returns
    -------
    BFGSUpdate(H, updated, reason)

    """
    s, y = hessian_action_pair(H, v, M, check_spd=check_spd)
    return bfgs_inverse_update(
        H,
        s,
        y,
        gbar_norm=gbar_norm,
        relative_threshold=relative_threshold,
        check_spd=False,  # checked by hessian_action_pair
    )


# ---------------------------------------------------------------------------------------------
# Validation shared by the quasi-Newton blocks (messages name the argument and the expected form)
# ---------------------------------------------------------------------------------------------


def check_vector(name: str, v, dim: int | None = None, dtype=None):
    """Check that ``v`` is a finite float vector (of length ``dim``, dtype ``dtype`` if given)."""
    check_float_array(name, v, dtype=dtype, ndim=1)
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"{name} must have length {dim}, got shape {tuple(v.shape)}")
    return v


def check_pair(s, y) -> None:
    """Check that ``s`` and ``y`` are finite float vectors of one length and one dtype."""
    check_vector("s", s)
    check_vector("y", y, dim=s.shape[0], dtype=s.dtype)


def check_matrix(name: str, A, dim: int, dtype, *, check_spd: bool) -> None:
    """Check that ``A`` is a finite ``(dim, dim)`` float matrix; with ``check_spd`` also SPD.

    Symmetry is required to ``max|A - A^T| <= sqrt(eps) max|A|`` (``eps`` of the dtype), which
    admits matrices from an explicit inverse; positive definiteness is a Cholesky factorisation.
    """
    check_float_array(name, A, dtype=dtype, ndim=2)
    if A.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got {tuple(A.shape)}")
    if not check_spd:
        return
    xp = xp_of(A)
    scale = float(xp.max(xp.abs(A))) if dim else 0.0
    asymmetry = float(xp.max(xp.abs(A - A.T))) if dim else 0.0
    tolerance = math.sqrt(float(xp.finfo(A.dtype).eps)) * scale
    if asymmetry > tolerance:
        raise ValueError(
            f"{name} must be symmetric: max|{name} - {name}^T| = {asymmetry:.3e} exceeds "
            f"{tolerance:.3e} (sqrt(eps) * max|{name}|)"
        )
    try:
        xp.linalg.cholesky(A)
    except xp.linalg.LinAlgError as error:
        raise ValueError(
            f"{name} must be positive definite (its Cholesky factorisation failed)"
        ) from error


def as_operator(name: str, A, dim: int, dtype, *, check_spd: bool) -> Callable:
    """Return ``u -> A u`` for ``A`` given as an SPD matrix ``(dim, dim)`` or as a callable.

    A callable's output is checked at every call: a finite vector of length ``dim`` and dtype
    ``dtype``, else ``ValueError`` naming ``name``.
    """
    if not callable(A):
        check_matrix(name, A, dim, dtype, check_spd=check_spd)
        return lambda u: A @ u

    def apply(u):
        result = A(u)
        check_vector(f"{name} applied to a vector", result, dim=dim, dtype=dtype)
        return result

    return apply


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_nonnegative(name: str, value) -> float:
    """Return ``value`` as a float after checking ``0 <= value < inf``."""
    if _check_real(name, value) < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float after checking ``0 < value < inf``."""
    if _check_real(name, value) <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_in_interval(name: str, value, low: float, high: float, *, closed_high: bool) -> float:
    """Return ``value`` as a float after checking ``low < value < high`` (or ``<= high``)."""
    value_f = _check_real(name, value)
    inside = low < value_f <= high if closed_high else low < value_f < high
    if not inside:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must lie in ({low:g}, {high:g}{bracket}, got {value!r}")
    return value_f
