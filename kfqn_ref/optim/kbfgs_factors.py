"""Per-layer pieces of K-BFGS: one layer's state, curvature pairs and preconditioned direction.

Pure functions over arrays; the iteration that calls them, its options and their sources are in
:mod:`kfqn_ref.optim.kbfgs` (and ``docs/optimizers/kbfgs.md``).

Notation (``docs/conventions.md``): a trainable layer has homogeneous weight ``W~`` of shape
``(d_out, D1)`` (``D1 = d_in + 1`` with a bias); its record holds ``a~`` ``(N, D1)`` or, for
Conv2d, ``(N, P, D1)`` (``P`` output positions), and ``h``, ``g`` ``(N, d_out)`` or
``(N, P, d_out)``. The layer's curvature
block is approximated by ``A kron G``; K-BFGS keeps ``H_a ~ (A + lambda_A I)^{-1}`` ``(D1, D1)`` and
``H_g ~ G^{-1}`` ``(d_out, d_out)``, each either as a dense matrix or as a limited-memory store
(:class:`~kfqn_ref.quasi_newton.LBFGSState`), and steps along ``-H_g m H_a``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from kfqn_ref import backend, quasi_newton
from kfqn_ref.backend import Array
from kfqn_ref.curvature.factors import kbfgs_minibatch_action_unchecked
from kfqn_ref.quasi_newton import LBFGSState, SkipReason
from kfqn_ref.quasi_newton.bfgs import bfgs_inverse_update_unchecked, hessian_action_pair_unchecked
from kfqn_ref.quasi_newton.convergent import convergent_damping_unchecked
from kfqn_ref.quasi_newton.damping import (
    double_damping_2020_unchecked,
    double_damping_2022_unchecked,
)
from kfqn_ref.quasi_newton.lbfgs import lbfgs_append_unchecked, lbfgs_apply_unchecked


class KBFGSVariant(enum.Enum):
    """Which K-BFGS iteration to run; ``docs/optimizers/kbfgs.md`` writes each one out.

    ``AUTHORS_2020`` ("2020"): the authors' public code for dense nets, step for step: running
    ``A`` for every layer, ``H_a`` inverted explicitly at step 0; ``G`` pair: Powell (current
    ``H_g``) then the 2020 second damping (DD-2020) and the authors' skip rule with ``||gbar||``;
    ``A`` pair: undamped Hessian action. Dense layers only.
    ``KFQN_2022`` ("2022", the default): the conv extension: minibatch Hessian action for Conv2d
    ``A`` (running ``A`` for Dense), spatial-mean pairs; ``G`` pair: Powell (current ``H_g``) then
    Levenberg-Marquardt (DD-2022, "DDV2"), same skip rules; damping split, update interval.
    ``CONVERGENT`` ("convergent"): the damped limited-memory variant of
    ``docs/derivations/convergence.md`` (:class:`~kfqn_ref.optim.kbfgs.KBFGSL` with
    ``memory_light=True`` and ``momentum=0`` only): both factors are limited-memory stores with a
    fixed ``H_0 = gamma I``; both pairs get Powell w.r.t. ``H_0`` then Levenberg-Marquardt and are
    accepted whenever ``s^T y > 0``, so that ``kappa_lo I <= H <= kappa_hi I``.
    """

    AUTHORS_2020 = "2020"
    KFQN_2022 = "2022"
    CONVERGENT = "convergent"


class LayerState(NamedTuple):
    """The optimizer state of one trainable layer (never modified in place).

    momentum : ``(d_out, D1)`` gradient momentum ``m``.
    A : ``(D1, D1)`` running input factor, or ``None`` for a layer that keeps no running ``A``
        and uses the minibatch Hessian action instead (its ``A_B`` is formed only at step 0, to
        set a dense ``H_a``).
    H_a : ``(D1, D1)`` dense inverse estimate, or an :class:`LBFGSState` over vectors of length D1.
    H_g : ``(d_out, d_out)`` dense inverse estimate, or an :class:`LBFGSState` over length d_out.
    s_avg, y_avg : ``(d_out,)`` exponential averages of the ``G``-side pairs (start at 0).
    """

    momentum: Array
    A: Array | None
    H_a: Array | LBFGSState
    H_g: Array | LBFGSState
    s_avg: Array
    y_avg: Array


class PairDiagnostics(NamedTuple):
    """What one preconditioner update did to one layer (old-minus-new pairs, conventions §1).

    ``G`` side, all ``(d_out,)``: ``s_raw = mean(h) - mean(h+)``, ``y_raw = mean(g) - mean(g+)``
    (means over samples and positions); ``s_averaged``, ``y_averaged`` after the exponential
    averaging; ``s``, ``y`` after damping (what the update received); ``powell_damped``;
    ``second_damped``: the second damping acted (2020: the DD-2020 second damping; 2022 and
    convergent: the Levenberg-Marquardt shift ``y <- y + lambda_G s``); ``g_update``
    (``SkipReason.NONE`` when ``H_g`` changed or the pair was stored). ``A`` side, ``(D1,)``:
    ``abar = mean(a~)``, ``s_a = H_a abar``, ``y_a`` (after damping for the convergent variant),
    ``a_update``.
    """

    s_raw: Array
    y_raw: Array
    s_averaged: Array
    y_averaged: Array
    s: Array
    y: Array
    powell_damped: bool
    second_damped: bool
    g_update: SkipReason
    abar: Array
    s_a: Array
    y_a: Array
    a_update: SkipReason


# --- Shapes and means ---


def position_count(a: Array) -> int:
    """Number of output positions ``P`` of a record: ``a.shape[1]`` for conv, 1 for dense."""
    return a.shape[1] if a.ndim == 3 else 1


def sample_position_mean(x: Array) -> Array:
    """``(1/(N P)) sum_n sum_p x_{n,p}``: dense ``(N, d)`` or conv ``(N, P, d)`` to ``(d,)``.

    Written as a sum and a division: NumPy's ``mean`` computes the same (bit for bit) with more
    Python around it.
    """
    rows = x.reshape(-1, x.shape[-1])
    return rows.sum(axis=0) / rows.shape[0]


# --- Applying a factor (dense matrix or limited-memory store) ---


def apply_factor(H: Array | LBFGSState, V: Array) -> Array:
    """``H V`` for ``V`` ``(d,)`` or ``(d, k)``; ``H`` dense ``(d, d)`` or an :class:`LBFGSState`.

    A store is applied by :func:`~kfqn_ref.quasi_newton.lbfgs_apply`: the compact representation
    of Byrd, Nocedal & Schnabel (the authors' ``LBFGS_Hv``) multiplied out to its product form
    ``H = A^T D A + gamma (I - Y^T A)^T (I - Y^T A)``, ``A = R^-1 S``, or to its dense matrix once
    the store holds ``d`` pairs or more ([QN-13b] of ``docs/derivations/quasi-newton.md``).
    """
    if isinstance(H, LBFGSState):
        return lbfgs_apply_unchecked(H, V)
    return H @ V


def factor_operator(H: Array | LBFGSState) -> Array | Callable[[Array], Array]:
    """``u -> H u`` for a dense or limited-memory factor (what the damping blocks accept)."""
    if isinstance(H, LBFGSState):
        return lambda u: lbfgs_apply_unchecked(H, u)
    return H


def precondition(H_g: Array | LBFGSState, M: Array, H_a: Array | LBFGSState) -> Array:
    """``H_g M H_a`` for ``M`` ``(d_out, D1)``: two GEMMs for dense factors.

    ``H_g M H_a = unvec((H_a kron H_g) vec(M))`` (conventions §5). A limited-memory ``H_a`` acts
    on the rows of ``H_g M``.
    """
    left = apply_factor(H_g, M)
    if isinstance(H_a, LBFGSState):
        return lbfgs_apply_unchecked(H_a, left.T).T
    return left @ H_a


# --- The input-side (A) factor ---


def ema_input_factor(A: Array, a_batch_factor: Array, decay: float) -> Array:
    """``A <- beta A + (1 - beta) A_B`` (step K3 of ``docs/optimizers/kbfgs.md``; [code-2020])."""
    return decay * A + (1.0 - decay) * a_batch_factor


def running_mean(mean: Array, new: Array, count: int) -> Array:
    """``mean <- ((j-1)/j) mean + (1/j) new`` for the ``j = count``-th estimate (the pre-passes)."""
    return mean * ((count - 1) / count) + (1.0 / count) * new


def damped_inverse(A: Array, lambda_A: float) -> Array:
    """``(A + lambda_A I)^{-1}`` by an explicit inverse (the authors' ``H_a`` at step 0, K-FAC).

    A matrix singular in floating point (``lambda_A`` below the rounding of huge entries of ``A``)
    gives an inverse of ``inf``, which the caller's finiteness check refuses as an overflow.
    """
    xp = backend.xp_of(A)
    try:
        return xp.linalg.inv(A + lambda_A * xp.eye(A.shape[0], dtype=A.dtype))
    except xp.linalg.LinAlgError:
        return xp.full_like(A, xp.inf)


def running_action(A: Array, lambda_A: float) -> Callable[[Array], Array]:
    """``u -> (A + lambda_A I) u`` for the running ``A`` (``A_LM`` of [code-2020])."""
    return lambda u: A @ u + lambda_A * u


def minibatch_action(a: Array, lambda_A: float, position_average: bool) -> Callable[[Array], Array]:
    """``u -> A_B u + lambda_A u`` computed matrix-free ("miniBatchADamped" [code-cnn]).

    Here ``A_B u = (1/N) sum_n sum_p a~_{n,p} (a~_{n,p}^T u)``; ``lambda_A = 0`` gives ``A_B``
    alone.
    """
    if lambda_A == 0.0:
        return lambda u: kbfgs_minibatch_action_unchecked(a, u, position_average=position_average)
    return lambda u: (
        kbfgs_minibatch_action_unchecked(a, u, position_average=position_average) + lambda_A * u
    )


def update_input_factor(
    H_a: Array | LBFGSState,
    abar: Array,
    action: Callable[[Array], Array],
    *,
    variant: KBFGSVariant,
    lambda_A: float,
    mu1: float,
    skip_threshold: float,
) -> tuple[Array | LBFGSState, Array, Array, SkipReason]:
    """Hessian-action BFGS on the ``A`` side: ``s_a = H_a abar``, ``y_a = M s_a``, then update.

    ``action`` is ``u -> M u`` with ``M = A + lambda_A I`` (running or minibatch ``A``), except for
    ``KBFGSVariant.CONVERGENT`` where it is ``u -> A_B u`` and the pair is damped by Powell w.r.t.
    ``gamma I`` and Levenberg-Marquardt with ``mu2 = lambda_A`` (which restores
    ``y_a = (A_B + lambda_A I) s_a`` whenever Powell does not act). A dense ``H_a`` uses the
    authors' skip rule with ``gbar = abar``; a limited-memory store the rule of their
    ``Hessian-action-LBFGS`` (no reference vector, i.e. ``s^T y > 0``).

    Returns ``(H_a_new, s_a, y_a, SkipReason)``.
    """
    s_a, y_a = hessian_action_pair_unchecked(factor_operator(H_a), abar, action)
    if variant is KBFGSVariant.CONVERGENT:
        damped = convergent_damping_unchecked(s_a, y_a, gamma=H_a.gamma, mu1=mu1, mu2=lambda_A)
        s_a, y_a = damped.s, damped.y
    if isinstance(H_a, LBFGSState):
        # gbar_norm = 0 (accepted iff s^T y > 0) and a fixed gamma: the core's defaults
        result = lbfgs_append_unchecked(H_a, s_a, y_a, relative_threshold=skip_threshold)
        return result.state, s_a, y_a, result.reason
    xp = backend.xp_of(abar)
    result = bfgs_inverse_update_unchecked(
        H_a,
        s_a,
        y_a,
        gbar_norm=backend.host_scalar(xp.linalg.norm(abar)),
        relative_threshold=skip_threshold,
    )
    return result.H, s_a, y_a, result.reason


# --- The output-side (G) factor ---


def lost_positive_definiteness(H_g: Array | LBFGSState, y: Array) -> bool:
    """``y^T H_g y <= 0`` for ``y != 0``.

    Rounding has then made ``H_g`` singular (or indefinite) along ``y``, so Powell's ratio
    ``s^T y / y^T H_g y`` is meaningless. The authors' code divides by it anyway; :class:`KBFGS`
    skips the ``G`` update instead (``docs/optimizers/kbfgs.md``).
    """
    if not backend.host_bool((y != 0).any()):
        return False
    return not backend.host_scalar(y @ apply_factor(H_g, y)) > 0.0


def damp_output_pair(
    s: Array,
    y: Array,
    H_g: Array | LBFGSState,
    *,
    variant: KBFGSVariant,
    lambda_G: float,
    mu1: float,
) -> quasi_newton.DoubleDampedPair:
    """Double damping of the averaged ``G`` pair; returns a ``DoubleDampedPair``.

    2020: Powell with the current ``H_g`` then the second damping with ``eps = lambda_G``;
    2022: Powell with the current ``H_g`` then ``y <- y + lambda_G s``; convergent: Powell w.r.t.
    ``gamma I`` (the store's fixed ``H_0``) then ``y <- y + lambda_G s``.
    """
    if variant is KBFGSVariant.AUTHORS_2020:
        return double_damping_2020_unchecked(s, y, factor_operator(H_g), eps=lambda_G, mu1=mu1)
    if variant is KBFGSVariant.KFQN_2022:
        return double_damping_2022_unchecked(s, y, factor_operator(H_g), mu2=lambda_G, mu1=mu1)
    return convergent_damping_unchecked(s, y, gamma=H_g.gamma, mu1=mu1, mu2=lambda_G)


def update_output_factor(
    H_g: Array | LBFGSState,
    s: Array,
    y: Array,
    gbar: Array,
    *,
    variant: KBFGSVariant,
    skip_threshold: float,
) -> tuple[Array | LBFGSState, SkipReason]:
    """BFGS update of a dense ``H_g`` or L-BFGS append to a store.

    With the authors' skip rule (``gbar`` = minibatch-mean output gradient) or, for the
    convergent rule, ``s^T y > 0``.

    Returns ``(H_g_new, SkipReason)``.
    """
    xp = backend.xp_of(gbar)
    gbar_norm = (
        0.0 if variant is KBFGSVariant.CONVERGENT else backend.host_scalar(xp.linalg.norm(gbar))
    )
    if isinstance(H_g, LBFGSState):
        result = lbfgs_append_unchecked(  # gamma stays fixed (the core's default)
            H_g, s, y, gbar_norm=gbar_norm, relative_threshold=skip_threshold
        )
        return result.state, result.reason
    result = bfgs_inverse_update_unchecked(
        H_g, s, y, gbar_norm=gbar_norm, relative_threshold=skip_threshold
    )
    return result.H, result.reason
