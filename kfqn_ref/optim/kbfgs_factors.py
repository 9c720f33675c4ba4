"""Per-layer pieces of K-BFGS: one layer's state, curvature pairs and preconditioned direction.

Pure functions over arrays; the iteration that calls them, its options and their sources are in
:mod:`kfqn_ref.optim.kbfgs` (and ``docs/optimizers/kbfgs.md``).

Notation (``docs/conventions.md``): a trainable layer has homogeneous weight ``W~`` of shape
``(d_out, D1)`` (``D1 = d_in + 1`` with a bias); its record holds ``a~`` ``(N, D1)`` or, for
Conv2d, ``(N, T, D1)``, and ``h``, ``g`` ``(N, d_out)`` or ``(N, T, d_out)``. The layer's curvature
block is approximated by ``A kron G``; K-BFGS keeps ``H_a ~ (A + lambda_A I)^{-1}`` ``(D1, D1)`` and
``H_g ~ G^{-1}`` ``(d_out, d_out)``, each either as a dense matrix or as a limited-memory store
(:class:`~kfqn_ref.quasi_newton.LBFGSState`), and steps along ``-H_g m H_a``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from kfqn_ref import backend
from kfqn_ref.curvature.factors import kbfgs_minibatch_action_unchecked
from kfqn_ref.quasi_newton import GammaRule, LBFGSState, SkipReason
from kfqn_ref.quasi_newton.bfgs import bfgs_inverse_update_unchecked, hessian_action_pair_unchecked
from kfqn_ref.quasi_newton.convergent import convergent_damping_unchecked
from kfqn_ref.quasi_newton.damping import (
    double_damping_2020_unchecked,
    double_damping_2022_unchecked,
)
from kfqn_ref.quasi_newton.lbfgs import lbfgs_append_unchecked, lbfgs_compact_apply_unchecked


class PairRule(enum.Enum):
    """How a layer's curvature pairs are damped and screened (one per :class:`KBFGSVariant`).

    ``AUTHORS_2020``: ``G`` pair: Powell (current ``H_g``) then the 2020 second damping (DD-2020),
    authors' skip rule with ``||gbar||``; ``A`` pair: undamped Hessian action.
    ``KFQN_2022``: ``G`` pair: Powell (current ``H_g``) then Levenberg-Marquardt (DD-2022, "DDV2");
    ``A`` pair: undamped Hessian action. Same skip rules.
    ``CONVERGENT``: both pairs: Powell w.r.t. the fixed ``H_0 = gamma I`` then Levenberg-Marquardt,
    accepted whenever ``s^T y > 0`` (``docs/derivations/convergence.md``).
    """

    AUTHORS_2020 = "2020"
    KFQN_2022 = "2022"
    CONVERGENT = "convergent"


class LayerState(NamedTuple):
    """The optimizer state of one trainable layer (never modified in place).

    momentum : ``(d_out, D1)`` gradient momentum ``m``.
    A : ``(D1, D1)`` running input factor, or ``()`` for a layer that uses the minibatch Hessian
        action instead (no ``D1 x D1`` matrix kept).
    H_a : ``(D1, D1)`` dense inverse estimate, or an :class:`LBFGSState` over vectors of length D1.
    H_g : ``(d_out, d_out)`` dense inverse estimate, or an :class:`LBFGSState` over length d_out.
    s_avg, y_avg : ``(d_out,)`` exponential averages of the ``G``-side pairs (start at 0).
    """

    momentum: object
    A: object
    H_a: object
    H_g: object
    s_avg: object
    y_avg: object

    def check_loaded(self, prefix: str) -> None:
        """Ranges of a loaded layer state (shapes, dtypes and finiteness are checked already).

        A limited-memory factor must hold ``0 <= count <= memory`` pairs and ``gamma > 0``.
        Raises ``ValueError`` naming the entry, e.g. ``state.layers.0.H_g.count``.
        """
        for name in ("H_a", "H_g"):
            store = getattr(self, name)
            if isinstance(store, LBFGSState):
                check_loaded_store(store, f"{prefix}.{name}")


def check_loaded_store(store: LBFGSState, prefix: str) -> None:
    """``0 <= count <= memory`` (rows of ``S``) and ``gamma > 0`` for a loaded store."""
    memory = store.S.shape[0]
    if not 0 <= store.count <= memory:
        raise ValueError(
            f"state entry '{prefix}.count' must lie in [0, {memory}] (the memory), "
            f"got {store.count}"
        )
    if not store.gamma > 0.0:
        raise ValueError(f"state entry '{prefix}.gamma' must be > 0, got {store.gamma}")


class PairDiagnostics(NamedTuple):
    """What one preconditioner update did to one layer (old-minus-new pairs, conventions §1).

    ``G`` side, all ``(d_out,)``: ``s_raw = mean(h) - mean(h+)``, ``y_raw = mean(g) - mean(g+)``
    (means over samples and positions); ``s_averaged``, ``y_averaged`` after the exponential
    averaging; ``s``, ``y`` after damping (what the update received); ``powell_damped``,
    ``second_damped``; ``g_update`` (``SkipReason.NONE`` when ``H_g`` changed or the pair was
    stored). ``A`` side, ``(D1,)``: ``abar = mean(a~)``, ``s_a = H_a abar``, ``y_a`` (after damping
    for the convergent rule), ``a_update``.
    """

    s_raw: object
    y_raw: object
    s_averaged: object
    y_averaged: object
    s: object
    y: object
    powell_damped: bool
    second_damped: bool
    g_update: SkipReason
    abar: object
    s_a: object
    y_a: object
    a_update: SkipReason


# ---------------------------------------------------------------------------------------------
# Shapes and means
# ---------------------------------------------------------------------------------------------


def position_count(a) -> int:
    """Number of output positions ``T`` of a record: ``a.shape[1]`` for conv, 1 for dense."""
    return a.shape[1] if a.ndim == 3 else 1


def sample_position_mean(x):
    """``(1/(N T)) sum_n sum_t x_{n,t}``: dense ``(N, d)`` or conv ``(N, T, d)`` to ``(d,)``."""
    return x.reshape(-1, x.shape[-1]).mean(axis=0)


# ---------------------------------------------------------------------------------------------
# Applying a factor (dense matrix or limited-memory store)
# ---------------------------------------------------------------------------------------------


def apply_factor(H, V):
    """``H V`` for ``V`` ``(d,)`` or ``(d, k)``; ``H`` dense ``(d, d)`` or an :class:`LBFGSState`.

    A store is applied by the compact representation of Byrd, Nocedal & Schnabel, as the
    authors' ``LBFGS_Hv``.
    """
    if isinstance(H, LBFGSState):
        return lbfgs_compact_apply_unchecked(H, V)
    return H @ V


def factor_operator(H):
    """``u -> H u`` for a dense or limited-memory factor (what the damping blocks accept)."""
    if isinstance(H, LBFGSState):
        return lambda u: lbfgs_compact_apply_unchecked(H, u)
    return H


def precondition(H_g, M, H_a):
    """``H_g M H_a`` for ``M`` ``(d_out, D1)``: two GEMMs for dense factors.

    ``H_g M H_a = unvec((H_a kron H_g) vec(M))`` (conventions §5). A limited-memory ``H_a`` acts
    on the rows of ``H_g M``.
    """
    left = apply_factor(H_g, M)
    if isinstance(H_a, LBFGSState):
        return lbfgs_compact_apply_unchecked(H_a, left.T).T
    return left @ H_a


# ---------------------------------------------------------------------------------------------
# The input-side (A) factor
# ---------------------------------------------------------------------------------------------


def ema_input_factor(A, a_batch_factor, decay: float):
    """``A <- beta A + (1 - beta) A_B`` (ALGORITHMS.md §3 step 3; [code-2020])."""
    return decay * A + (1.0 - decay) * a_batch_factor


def damped_inverse(A, lambda_A: float):
    """``(A + lambda_A I)^{-1}`` by an explicit inverse (the authors' ``H_a`` at step 0)."""
    xp = backend.xp_of(A)
    return xp.linalg.inv(A + lambda_A * xp.eye(A.shape[0], dtype=A.dtype))


def running_action(A, lambda_A: float):
    """``u -> (A + lambda_A I) u`` for the running ``A`` (``A_LM`` of [code-2020])."""
    return lambda u: A @ u + lambda_A * u


def minibatch_action(a, lambda_A: float, position_average: bool):
    """``u -> A_B u + lambda_A u`` computed matrix-free ("miniBatchADamped" [code-cnn]).

    Here ``A_B u = (1/N) sum_n sum_t a~_{n,t} (a~_{n,t}^T u)``; ``lambda_A = 0`` gives ``A_B``
    alone.
    """
    if lambda_A == 0.0:
        return lambda u: kbfgs_minibatch_action_unchecked(a, u, position_average=position_average)
    return lambda u: (
        kbfgs_minibatch_action_unchecked(a, u, position_average=position_average) + lambda_A * u
    )


def update_input_factor(
    H_a, abar, action, *, rule: PairRule, lambda_A: float, mu1: float, skip_threshold: float
):
    """Hessian-action BFGS on the ``A`` side: ``s_a = H_a abar``, ``y_a = M s_a``, then update.

    ``action`` is ``u -> M u`` with ``M = A + lambda_A I`` (running or minibatch ``A``), except for
    ``PairRule.CONVERGENT`` where it is ``u -> A_B u`` and the pair is damped by Powell w.r.t.
    ``gamma I`` and Levenberg-Marquardt with ``mu2 = lambda_A`` (which restores
    ``y_a = (A_B + lambda_A I) s_a`` whenever Powell does not act). A dense ``H_a`` uses the
    authors' skip rule with ``gbar = abar``; a limited-memory store the rule of their
    ``Hessian-action-LBFGS`` (no reference vector, i.e. ``s^T y > 0``).

    Returns ``(H_a_new, s_a, y_a, SkipReason)``.
    """
    s_a, y_a = hessian_action_pair_unchecked(factor_operator(H_a), abar, action)
    if rule is PairRule.CONVERGENT:
        damped = convergent_damping_unchecked(s_a, y_a, gamma=H_a.gamma, mu1=mu1, mu2=lambda_A)
        s_a, y_a = damped.s, damped.y
    if isinstance(H_a, LBFGSState):
        result = lbfgs_append_unchecked(
            H_a,
            s_a,
            y_a,
            gbar_norm=0.0,
            relative_threshold=skip_threshold,
            gamma_rule=GammaRule.FIXED,
        )
        return result.state, s_a, y_a, result.reason
    xp = backend.xp_of(abar)
    result = bfgs_inverse_update_unchecked(
        H_a,
        s_a,
        y_a,
        gbar_norm=float(xp.linalg.norm(abar)),
        relative_threshold=skip_threshold,
    )
    return result.H, s_a, y_a, result.reason


# ---------------------------------------------------------------------------------------------
# The output-side (G) factor
# ---------------------------------------------------------------------------------------------


def lost_positive_definiteness(H_g, y) -> bool:
    """``y^T H_g y <= 0`` for ``y != 0``.

    Rounding has then made ``H_g`` singular (or indefinite) along ``y``, so Powell's ratio
    ``s^T y / y^T H_g y`` is meaningless. The authors' code divides by it anyway; :class:`KBFGS`
    skips the ``G`` update instead (``docs/optimizers/kbfgs.md``).
    """
    xp = backend.xp_of(y)
    return bool(xp.any(y != 0)) and not float(y @ apply_factor(H_g, y)) > 0.0


def damp_output_pair(s, y, H_g, *, rule: PairRule, lambda_G: float, mu1: float):
    """Double damping of the averaged ``G`` pair; returns a ``DoubleDampedPair``.

    2020: Powell with the current ``H_g`` then the second damping with ``eps = lambda_G``;
    2022: Powell with the current ``H_g`` then ``y <- y + lambda_G s``; convergent: Powell w.r.t.
    ``gamma I`` (the store's fixed ``H_0``) then ``y <- y + lambda_G s``.
    """
    if rule is PairRule.AUTHORS_2020:
        return double_damping_2020_unchecked(s, y, factor_operator(H_g), eps=lambda_G, mu1=mu1)
    if rule is PairRule.KFQN_2022:
        return double_damping_2022_unchecked(s, y, factor_operator(H_g), mu2=lambda_G, mu1=mu1)
    return convergent_damping_unchecked(s, y, gamma=H_g.gamma, mu1=mu1, mu2=lambda_G)


def update_output_factor(H_g, s, y, gbar, *, rule: PairRule, skip_threshold: float):
    """BFGS update of a dense ``H_g`` or L-BFGS append to a store.

    With the authors' skip rule (``gbar`` = minibatch-mean output gradient) or, for the
    convergent rule, ``s^T y > 0``.

    Returns ``(H_g_new, SkipReason)``.
    """
    xp = backend.xp_of(gbar)
    gbar_norm = 0.0 if rule is PairRule.CONVERGENT else float(xp.linalg.norm(gbar))
    if isinstance(H_g, LBFGSState):
        result = lbfgs_append_unchecked(
            H_g,
            s,
            y,
            gbar_norm=gbar_norm,
            relative_threshold=skip_threshold,
            gamma_rule=GammaRule.FIXED,
        )
        return result.state, result.reason
    result = bfgs_inverse_update_unchecked(
        H_g, s, y, gbar_norm=gbar_norm, relative_threshold=skip_threshold
    )
    return result.H, result.reason
