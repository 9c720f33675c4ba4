"""Shampoo (Gupta, Koren & Singer 2018) on the homogeneous weight matrix of each trainable layer.

For a matrix parameter, Shampoo keeps a left preconditioner over the rows and a right one over the
columns, each the sum of the gradient's outer products, and preconditions the gradient on both
sides with their inverse fourth roots (Gupta et al. 2018, Algorithm 1). Here each trainable layer's
parameter is ``W~ = [W | b]`` (``docs/conventions.md`` §3): ``(d_out, d_in + 1)`` for Dense and
``(c_out, c_in k_h k_w + 1)`` for Conv2d (the kernel flattened to a matrix, the K-BFGS authors'
"filterFlattening" Shampoo baseline). The defaults and their sources, the references and the
test: ``docs/optimizers/baselines.md``, Shampoo.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import NamedTuple

from kfqn_ref import backend, nn
from kfqn_ref._checks import check_in_interval, check_int, check_non_negative, check_positive
from kfqn_ref.backend import Array
from kfqn_ref.optim.base import Optimizer, check_new_state, store_choice
from kfqn_ref.optim.first_order import (
    MomentumForm,
    apply_steps,
    momentum_update,
    regularised_gradients,
    zeros_like_weights,
)

#: Shampoo raises each preconditioner of an order-``k`` tensor to ``-1/(2k)``; a matrix has
#: ``k = 2``, hence the inverse FOURTH root (Gupta et al. 2018, Algorithm 1 and §3).
MATRIX_ROOT = 4


@dataclasses.dataclass(frozen=True)
class ShampooConfig:
    """Options of :class:`Shampoo` (defaults and sources: ``docs/optimizers/baselines.md``).

    ``lr > 0`` (``eta``); ``eps > 0`` (``L_0 = R_0 = eps I``); ``root_interval >= 1``, the steps
    between recomputations of the inverse roots; ``momentum`` in ``[0, 1)`` (``mu``) and
    ``momentum_form``, the momentum on the gradient; ``weight_decay >= 0`` (``tau``).
    """

    lr: float = 0.1
    eps: float = 1e-4
    root_interval: int = 1
    momentum: float = 0.0
    momentum_form: MomentumForm = MomentumForm.AVERAGE
    weight_decay: float = 0.0

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("eps", self.eps)
        check_int("root_interval", self.root_interval, minimum=1)
        check_in_interval("momentum", self.momentum, 0.0, 1.0, closed_low=True)
        store_choice(self, "momentum_form", MomentumForm)
        check_non_negative("weight_decay", self.weight_decay)


class ShampooState(NamedTuple):
    """Per trainable layer ``i`` (``W~`` of shape ``(d_out, D)``).

    momentum[i] : ``(d_out, D)``, the momentum buffer ``m``.
    L[i], R[i] : ``(d_out, d_out)`` and ``(D, D)``, ``eps I`` plus the sums of ``d d^T`` and
        ``d^T d`` so far.
    L_root[i], R_root[i] : ``L^{-1/4}`` and ``R^{-1/4}`` at the last refresh (zero before step 0).
    """

    momentum: tuple
    L: tuple
    R: tuple
    L_root: tuple
    R_root: tuple


def spd_inverse_root(M: Array, root: int) -> Array:
    """``M^{-1/root}`` of a symmetric positive definite ``M`` from its eigendecomposition.

    ``M = V diag(w) V^T`` (``eigh``) gives ``M^{-1/root} = V diag(w^{-1/root}) V^T``, symmetric by
    construction. A non-positive eigenvalue (``M`` not numerically SPD), or an ``eigh`` that does
    not converge (entries near overflow), yields NaN, which makes the step be refused
    (:class:`kfqn_ref.optim.base.NonFiniteError`), never a silent clip.
    """
    xp = backend.xp_of(M)
    try:
        eigenvalues, eigenvectors = xp.linalg.eigh(M)
    except xp.linalg.LinAlgError:
        return xp.full_like(M, xp.nan)
    with _quiet_invalid_power(xp):
        scaled = eigenvectors * eigenvalues ** (-1.0 / root)
    return scaled @ eigenvectors.T


def _quiet_invalid_power(xp):
    """Silence NumPy's warning for a negative base; the NaN it yields is reported by the step."""
    return xp.errstate(invalid="ignore") if hasattr(xp, "errstate") else contextlib.nullcontext()


class Shampoo(Optimizer):
    r"""Shampoo for matrices (Gupta, Koren & Singer 2018, Algorithm 1) with momentum.

    Step ``k``, per trainable layer (``W~`` of shape ``(d_out, D)``)::

        d_k = grad f(W~_k) + tau W~_k                              (d_out, D)
        L_k = L_{k-1} + d_k d_k^T        L_{-1} = eps I            (d_out, d_out)
        R_k = R_{k-1} + d_k^T d_k        R_{-1} = eps I            (D, D)
        if k % root_interval == 0:  P_L = L_k^{-1/4},  P_R = R_k^{-1/4}     (eigh)
        m_k = mu m_{k-1} + c d_k         c = 1 - mu (AVERAGE) or 1 (HEAVY_BALL), m_{-1} = 0
        W~_{k+1} = W~_k - eta P_L m_k P_R

    With ``momentum = 0`` and ``root_interval = 1`` this is Algorithm 1. Tested by
    ``tests/optim/test_baselines.py::test_shampoo_matches_fractional_matrix_power``.
    """

    config_class = ShampooConfig
    supported_layers = (nn.Dense, nn.Conv2d)

    def _initial_state(self) -> ShampooState:
        weights = self.model.weights()
        xp = backend.xp_of(weights[0])
        eps = self.config.eps
        L = tuple(eps * xp.eye(w.shape[0], dtype=w.dtype) for w in weights)
        R = tuple(eps * xp.eye(w.shape[1], dtype=w.dtype) for w in weights)
        L_root = tuple(xp.zeros_like(m) for m in L)
        R_root = tuple(xp.zeros_like(m) for m in R)
        return ShampooState(zeros_like_weights(self.model), L, R, L_root, R_root)

    def _step(self, X, T):
        cfg = self.config
        loss, weights, regularised = regularised_gradients(self.model, X, T, cfg.weight_decay)
        L = tuple(L + d @ d.T for L, d in zip(self.state.L, regularised, strict=True))
        R = tuple(R + d.T @ d for R, d in zip(self.state.R, regularised, strict=True))
        check_new_state("Shampoo L", L)
        check_new_state("Shampoo R", R)
        L_root, R_root = self.state.L_root, self.state.R_root
        if self.step_count % cfg.root_interval == 0:
            L_root = tuple(spd_inverse_root(M, MATRIX_ROOT) for M in L)
            R_root = tuple(spd_inverse_root(M, MATRIX_ROOT) for M in R)
            check_new_state("Shampoo L^{-1/4}", L_root)
            check_new_state("Shampoo R^{-1/4}", R_root)
        momentum = tuple(
            momentum_update(m, d, cfg.momentum, cfg.momentum_form)
            for m, d in zip(self.state.momentum, regularised, strict=True)
        )
        steps = [P_L @ m @ P_R for m, P_L, P_R in zip(momentum, L_root, R_root, strict=True)]
        apply_steps(self.model, weights, steps, cfg.lr)
        return loss, ShampooState(momentum, L, R, L_root, R_root)
