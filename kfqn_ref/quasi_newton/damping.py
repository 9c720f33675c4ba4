"""Damping of a curvature pair ``(s, y)`` before a BFGS update, with the guarantee of each scheme.

Equations are cited as ``[QN-n]`` from ``docs/derivations/quasi-newton.md`` section 5.

=====================================  =======================  ====================================
function                               modifies                 guarantee afterwards
=====================================  =======================  ====================================
:func:`powell_damping`                 ``s`` (H-form, ``mu1``)  ``s^T y >= mu1 y^T H y``  [QN-16]
:func:`second_damping`                 ``y`` (2020, ``eps``)    ``s^T y >= eps s^T s``  [QN-18]
:func:`levenberg_marquardt_damping`    ``y`` (``mu2``)          ``s^T y += mu2 s^T s``  [QN-19]
:func:`double_damping_2020`            Powell, then second      ``s^T y >= eps s^T s``  [QN-20]
:func:`double_damping_2022`            Powell, then LM          ``s^T y >= mu2 s^T s``  [QN-21]
=====================================  =======================  ====================================

``H`` is given as an SPD matrix ``(d, d)`` or as a callable ``u -> H u`` (an L-BFGS operator,
``gamma * u``, ...). Every function is pure: it returns new arrays (or the input arrays themselves
when nothing changes) and says whether it damped. A damping test is written
``s^T y < mu1 y^T H y`` (strict; why it agrees with the authors' ratio test:
``docs/derivations/quasi-newton.md`` section 5). A pair that leaves the floating-point range
raises :class:`~kfqn_ref._checks.NonFiniteError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import (
    NonFiniteError,
    check_curvature_pair,
    check_in_interval,
    check_positive,
    check_spd_operator,
)
from kfqn_ref.backend import Array, host_bool, host_scalar, xp_of
from kfqn_ref.quasi_newton.bfgs import apply_operator

#: The authors' Powell parameter (``kbfgs_utils.kron_bfgs_update_damping`` passes ``0.2``).
AUTHORS_MU1 = 0.2


class DampedPair(NamedTuple):
    """A pair after one damping step; ``damped`` says whether it was modified."""

    s: object
    y: object
    damped: bool


class DoubleDampedPair(NamedTuple):
    """A pair after a double damping: Powell first, then a second stage.

    ``powell_damped``: Powell moved ``s``. ``second_damped``: the second stage acted, which is
    the 2020 second damping for DD-2020 (it moves ``y`` only when ``s^T y < eps s^T s``) and
    Levenberg–Marquardt for DD-2022 and the convergent variant (always applied, so always
    ``True``); ``docs/derivations/quasi-newton.md`` section 5.
    """

    s: object
    y: object
    powell_damped: bool
    second_damped: bool


def powell_damping(
    s: Array, y: Array, H: Array | Callable, *, mu1: float = AUTHORS_MU1
) -> DampedPair:
    """Powell damping in H-form [QN-15]: interpolate ``s`` towards ``H y``.

    ::

        if s^T y < mu1 y^T H y:
            theta = (1 - mu1) y^T H y / (y^T H y - s^T y)          in (0, 1)
            s    <- theta s + (1 - theta) H y

    Guarantee [QN-16]: ``s^T y >= mu1 y^T H y`` afterwards (with equality when damped), hence
    ``s^T y >= 0``, and ``> 0`` when ``y != 0``; this holds for pairs of negative curvature too.

    ``s, y``: finite ``(d,)`` of one dtype; ``H``: ``(d, d)`` SPD or a callable ``u -> H u`` (the
    current inverse approximation; the convergent variant uses ``gamma I``); ``mu1`` in
    ``(0, 1)``, the authors' ``0.2``. Returns ``DampedPair(s, y, damped)`` with ``y`` unchanged.
    The products are evaluated scale-safely (``docs/derivations/quasi-newton.md`` [QN-15]).
    ``ValueError`` when a callable ``H`` gives ``y^T H y <= 0`` for ``y != 0``;
    :class:`NonFiniteError` when the pair or the damped ``s`` overflows.
    """
    check_curvature_pair(s, y)
    mu1 = check_in_interval("mu1", mu1, 0.0, 1.0)
    return powell_damping_unchecked(s, y, check_spd_operator("H", H, s.shape[0], s.dtype), mu1=mu1)


def powell_damping_unchecked(s: Array, y: Array, H: Array | Callable, *, mu1: float) -> DampedPair:
    """As :func:`powell_damping`, without argument checks (for trusted callers)."""
    y_max = host_scalar(abs(y).max()) if y.size else 0.0
    if y_max == 0.0:  # y = 0: s^T y = 0 = mu1 y^T H y, nothing to damp
        return DampedPair(s, y, False)
    # Scale-safe test: with y = 2^e z (max|z| in [1/2, 1), exact), the test and theta are those of
    # the products divided by 2^e -- bit for bit the same as unscaled where nothing under- or
    # overflows, and still right where y^T H y alone would (a tiny or huge y).
    module = xp_of(s, y)
    exponent = math.frexp(y_max)[1]
    z = module.ldexp(y, -exponent)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        Hz = apply_operator(H, z)
        s_dot_y = s @ z  # s^T y / 2^e
        y_H_y = host_scalar(module.ldexp(z @ Hz, exponent))  # y^T H y / 2^e
    s_dot_y_host, _ = _check_finite_products(s_dot_y, y_H_y, "y^T H y")
    if y_H_y <= 0.0:
        raise ValueError(f"H must be positive definite, but y^T H y = {y_H_y:.3e} <= 0")
    if not s_dot_y_host < mu1 * y_H_y:
        return DampedPair(s, y, False)
    theta = (1.0 - mu1) * y_H_y / (y_H_y - s_dot_y)
    with np.errstate(over="ignore", invalid="ignore"):
        s_new = theta * s + (1.0 - theta) * module.ldexp(Hz, exponent)
    if not host_bool(module.isfinite(s_new).all()):
        raise NonFiniteError(
            "the damped s overflows the floating-point range (H y is too large; rescale s and y)"
        )
    return DampedPair(s_new, y, True)


def second_damping(s: Array, y: Array, *, eps: float) -> DampedPair:
    """Apply the authors' 2020 second damping [QN-17]: interpolate ``y`` towards ``s``.

    (``kbfgs_utils.get_BFGS_ModifiedDamping``.)

    ::

        if s^T y < eps s^T s:
            theta = (1 - eps) s^T s / (s^T s - s^T y)              in [0, 1)
            y    <- theta y + (1 - theta) s

    Guarantee [QN-18]: ``s^T y >= eps s^T s`` afterwards (with equality when damped), for any
    sign of the incoming curvature. ``s, y``: finite ``(d,)`` of one dtype; ``eps`` in ``(0, 1]``
    (``theta`` is a convex weight only for ``eps <= 1``; the authors use ``sqrt(lambda)``).
    Returns ``DampedPair(s, y, damped)`` with ``s`` unchanged.
    """
    check_curvature_pair(s, y)
    eps = check_in_interval("eps", eps, 0.0, 1.0, closed_high=True)
    return second_damping_unchecked(s, y, eps=eps)


def second_damping_unchecked(s: Array, y: Array, *, eps: float) -> DampedPair:
    """As :func:`second_damping`, without argument checks (for trusted callers)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        s_dot_s = s @ s
        s_dot_y = s @ y
    s_dot_y_host, s_dot_s_host = _check_finite_products(s_dot_y, s_dot_s, "s^T s")
    if not s_dot_y_host < eps * s_dot_s_host:
        return DampedPair(s, y, False)
    theta = (1.0 - eps) * s_dot_s / (s_dot_s - s_dot_y)
    return DampedPair(s, theta * y + (1.0 - theta) * s, True)


def levenberg_marquardt_damping(s: Array, y: Array, *, mu2: float) -> DampedPair:
    """Levenberg–Marquardt damping [QN-19]: ``y <- y + mu2 s`` (always applied).

    It is the secant pair of ``B + mu2 I`` when ``(s, y)`` is one of ``B``:
    ``s^T y+ = s^T y + mu2 s^T s``, so ``s^T y+ >= mu2 s^T s`` exactly when ``s^T y >= 0``
    (e.g. after :func:`powell_damping`); on its own it does NOT repair negative curvature.
    ``s, y``: finite ``(d,)`` of one dtype; ``mu2 > 0`` (the 2022 configuration: ``sqrt(lambda)``,
    asdl ``powell_lm_damping_``). Returns ``DampedPair(s, y + mu2 s, True)``;
    :class:`NonFiniteError` when ``y + mu2 s`` overflows.
    """
    check_curvature_pair(s, y)
    return levenberg_marquardt_damping_unchecked(s, y, mu2=check_positive("mu2", mu2))


def levenberg_marquardt_damping_unchecked(s: Array, y: Array, *, mu2: float) -> DampedPair:
    """As :func:`levenberg_marquardt_damping`, without argument checks (for trusted callers)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        y_new = y + mu2 * s
    if not host_bool(xp_of(s, y).isfinite(y_new).all()):
        raise NonFiniteError(
            f"y + mu2 s overflows the floating-point range (mu2 = {mu2!r}, max|s| = "
            f"{host_scalar(abs(s).max()):.3e}; rescale s and y)"
        )
    return DampedPair(s, y_new, True)


def double_damping_2020(
    s: Array, y: Array, H: Array | Callable, *, eps: float, mu1: float = AUTHORS_MU1
) -> DoubleDampedPair:
    """Apply DD-2020 [QN-20]: Powell damping, then the 2020 second damping.

    (``kbfgs_utils.kron_bfgs_update_damping``): :func:`powell_damping` with ``H`` and ``mu1``,
    then :func:`second_damping` with ``eps``. Guarantee: ``s^T y >= eps s^T s`` afterwards (the
    Powell inequality may be lost by the second step). Arguments as in the two steps; returns
    ``DoubleDampedPair(s, y, powell_damped, second_damped)``.
    """
    check_curvature_pair(s, y)
    H = check_spd_operator("H", H, s.shape[0], s.dtype)
    eps = check_in_interval("eps", eps, 0.0, 1.0, closed_high=True)
    mu1 = check_in_interval("mu1", mu1, 0.0, 1.0)
    return double_damping_2020_unchecked(s, y, H, eps=eps, mu1=mu1)


def double_damping_2020_unchecked(
    s: Array, y: Array, H: Array | Callable, *, eps: float, mu1: float
) -> DoubleDampedPair:
    """As :func:`double_damping_2020`, without argument checks (for trusted callers)."""
    powell = powell_damping_unchecked(s, y, H, mu1=mu1)
    second = second_damping_unchecked(powell.s, powell.y, eps=eps)
    return DoubleDampedPair(second.s, second.y, powell.damped, second.damped)


def double_damping_2022(
    s: Array, y: Array, H: Array | Callable, *, mu2: float, mu1: float = AUTHORS_MU1
) -> DoubleDampedPair:
    """Apply DD-2022 [QN-21]: Powell damping, then Levenberg–Marquardt damping.

    ("DDV2", asdl ``powell_lm_damping_``): :func:`powell_damping` with ``H`` and ``mu1``, then
    :func:`levenberg_marquardt_damping` with ``mu2``. Guarantee:
    ``s^T y >= mu1 y0^T H y0 + mu2 s^T s >= mu2 s^T s`` afterwards (``y0`` the incoming ``y``,
    ``s`` the Powell-damped step), for any sign of the incoming curvature. Returns
    ``DoubleDampedPair(s, y, powell_damped, second_damped=True)`` (the LM step always acts).
    """
    check_curvature_pair(s, y)
    H = check_spd_operator("H", H, s.shape[0], s.dtype)
    mu2 = check_positive("mu2", mu2)
    mu1 = check_in_interval("mu1", mu1, 0.0, 1.0)
    return double_damping_2022_unchecked(s, y, H, mu2=mu2, mu1=mu1)


def double_damping_2022_unchecked(
    s: Array, y: Array, H: Array | Callable, *, mu2: float, mu1: float
) -> DoubleDampedPair:
    """As :func:`double_damping_2022`, without argument checks (for trusted callers)."""
    powell = powell_damping_unchecked(s, y, H, mu1=mu1)
    lm = levenberg_marquardt_damping_unchecked(powell.s, powell.y, mu2=mu2)
    return DoubleDampedPair(lm.s, lm.y, powell.damped, lm.damped)


def _check_finite_products(s_dot_y, other, other_name: str) -> tuple[float, float]:
    """Return ``s^T y`` and ``other`` as host floats, for the caller's comparisons.

    :class:`NonFiniteError` unless both are finite (the pair overflows). The caller keeps the
    device scalars for its arithmetic (``theta``), so a float32 pair stays bit-identical.
    """
    s_dot_y, other = host_scalar(s_dot_y), host_scalar(other)
    if not (math.isfinite(s_dot_y) and math.isfinite(other)):
        raise NonFiniteError(
            f"s^T y = {s_dot_y!r} and {other_name} = {other!r} must be finite: "
            "the pair overflows the floating-point range (rescale s and y)"
        )
    return s_dot_y, other
