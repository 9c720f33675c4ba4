"""First-order baselines: SGD with momentum, Adam and RMSprop.

Every optimizer here works on the homogeneous weights ``W~ = [W | b]`` of each trainable layer
(``docs/conventions.md`` §3) and sees, per step, the regularised gradient

    d = grad f(W~) + tau W~                       (coupled L2 weight decay, bias column included)

of the minibatch-mean loss ``f`` (§6). Weight decay is added to the gradient of ``W`` AND ``b``, as
the K-BFGS authors' code does for every method it compares [code-2020]. Each update below is written
per layer and elementwise; squares, square roots and divisions of matrices are elementwise.

The helpers :class:`MomentumForm`, :func:`momentum_update`, :func:`regularised_gradients` and
:func:`apply_steps` are shared with the Kronecker-factored baselines (``kfac.py``, ``shampoo.py``).
Each option's default and its source, the references and the tests of every equation:
``docs/optimizers/baselines.md``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

from kfqn_ref import backend
from kfqn_ref._checks import check_bool, check_in_interval, check_non_negative, check_positive
from kfqn_ref.backend import Array
from kfqn_ref.optim.base import (
    Optimizer,
    check_loss_and_gradients,
    check_new_state,
    set_new_weights,
    store_choice,
)
from kfqn_ref.optim.state_io import check_non_negative_entry

# --- Shared pieces ---


class MomentumForm(enum.Enum):
    """How a momentum buffer ``v`` accumulates the regularised gradient ``d`` (momentum ``mu``).

    ``HEAVY_BALL``: ``v <- mu v + d`` (Polyak 1964; ``torch.optim.SGD`` with ``dampening=0``).
    ``AVERAGE``: ``v <- mu v + (1 - mu) d``, an exponential average (the K-BFGS authors' code,
    ``momentum_gradient_rho = 0.9``, for every method it compares [code-2020]).
    """

    HEAVY_BALL = "heavy_ball"
    AVERAGE = "average"


def _new_gradient_weight(momentum: float, form: MomentumForm) -> float:
    """Return ``c`` of ``v <- mu v + c d``: 1 (heavy ball) or ``1 - mu`` (average)."""
    return 1.0 if form is MomentumForm.HEAVY_BALL else 1.0 - momentum


def momentum_update(velocity: Array, d: Array, momentum: float, form: MomentumForm) -> Array:
    """Return the new buffer ``mu v + c d`` (a new array; ``c`` as in :class:`MomentumForm`).

    Accumulated in the new array (the same two products and sum as the expression, so the same
    bits, with one temporary fewer); ``velocity`` and ``d`` are not written.
    """
    new_velocity = _new_gradient_weight(momentum, form) * d
    new_velocity += momentum * velocity
    return new_velocity


def nesterov_direction(new_velocity: Array, d: Array, momentum: float, form: MomentumForm) -> Array:
    """Nesterov's look-ahead step ``mu v_new + c d`` (Sutskever et al. 2013, eq. 3-4 rewritten).

    With ``form = HEAVY_BALL`` this is ``torch.optim.SGD(nesterov=True)``.
    """
    return momentum * new_velocity + _new_gradient_weight(momentum, form) * d


def regularised_gradients(
    model, X: Array, T: Array, weight_decay: float
) -> tuple[float, list[Array], list[Array]]:
    """One forward/backward pass at the current weights, loss and gradients checked finite.

    Returns ``(loss, weights, regularised)`` where ``loss`` is the minibatch-mean loss ``f``
    (without the weight-decay term), ``weights`` the homogeneous weights ``W~`` the pass used (the
    model's own arrays, not copies: read them, never write into them) and ``regularised`` the
    regularised gradients ``d = grad f + tau W~``, one ``(d_out, D)`` array per trainable layer.
    The gradients are fresh arrays of this pass, so ``tau W~`` is added into them in place; with
    ``tau = 0``, ``d`` is the gradient itself.
    """
    result = model.forward_backward(X, T)
    check_loss_and_gradients(result.loss, result.grads)
    weights = list(result.weights)
    regularised = result.grads
    if weight_decay != 0.0:
        for grad, weight in zip(regularised, weights, strict=True):
            grad += weight_decay * weight
    return result.loss, weights, regularised


def apply_steps(model, weights: list[Array], steps: list[Array], lr: float) -> None:
    """Set the model's weights to ``W~ - lr * p`` for each layer's step ``p`` (new arrays).

    Raises :class:`~kfqn_ref.optim.base.NonFiniteError` (the step is refused) if a new weight is
    not finite. Each new weight starts as the new array ``-lr p`` and ``W~`` is added into it:
    ``W~ + (-(lr p))`` rounds exactly as ``W~ - lr p`` (negation is exact), with one temporary
    fewer; ``weights`` and ``steps`` are not written.
    """
    new_weights = []
    for weight, step in zip(weights, steps, strict=True):
        new_weight = -lr * step
        new_weight += weight
        new_weights.append(new_weight)
    set_new_weights(model, new_weights)


def zeros_like_weights(model) -> tuple[Array, ...]:
    """One zero array per trainable layer, shaped and typed like its homogeneous weight."""
    return tuple(backend.xp_of(w).zeros_like(w) for w in model.weights())


# --- SGD with momentum ---


@dataclasses.dataclass(frozen=True)
class SGDMomentumConfig:
    """Options of :class:`SGDMomentum` (defaults and sources: ``docs/optimizers/baselines.md``).

    ``lr > 0`` (``alpha``), ``momentum`` in ``[0, 1)`` (``mu``), ``weight_decay >= 0`` (``tau``),
    ``nesterov`` (Nesterov's look-ahead), ``form`` (how the buffer accumulates).
    """

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    form: MomentumForm = MomentumForm.HEAVY_BALL

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_in_interval("momentum", self.momentum, 0.0, 1.0, closed_low=True)
        check_non_negative("weight_decay", self.weight_decay)
        check_bool("nesterov", self.nesterov)
        store_choice(self, "form", MomentumForm)


class SGDMomentumState(NamedTuple):
    """``velocity[i]``: the momentum buffer ``v`` of trainable layer ``i``, shaped like ``W~``."""

    velocity: tuple


class SGDMomentum(Optimizer):
    r"""Stochastic gradient descent with (Nesterov) momentum.

    Per trainable layer, with ``d = grad f + tau W~`` (shape ``(d_out, D)``)::

        v_{k+1} = mu v_k + c d_k            c = 1 (HEAVY_BALL) or 1 - mu (AVERAGE), v_0 = 0
        p_k     = v_{k+1}                   (classical momentum, Polyak 1964)
        p_k     = mu v_{k+1} + c d_k        (nesterov=True, Sutskever et al. 2013)
        W~_{k+1} = W~_k - alpha p_k

    With ``momentum = 0`` this is plain SGD. Tested by
    ``tests/optim/test_baselines.py::test_sgd_momentum_matches_written_out_recursion``.
    """

    config_class = SGDMomentumConfig

    def _initial_state(self) -> SGDMomentumState:
        return SGDMomentumState(velocity=zeros_like_weights(self.model))

    def _step(self, X, T):
        cfg = self.config
        loss, weights, regularised = regularised_gradients(self.model, X, T, cfg.weight_decay)
        velocity = tuple(
            momentum_update(v, d, cfg.momentum, cfg.form)
            for v, d in zip(self.state.velocity, regularised, strict=True)
        )
        if cfg.nesterov:
            steps = [
                nesterov_direction(v, d, cfg.momentum, cfg.form)
                for v, d in zip(velocity, regularised, strict=True)
            ]
        else:
            steps = list(velocity)
        apply_steps(self.model, weights, steps, cfg.lr)
        return loss, SGDMomentumState(velocity=velocity)


# --- Adam ---


@dataclasses.dataclass(frozen=True)
class AdamConfig:
    """Options of :class:`Adam` (defaults and sources: ``docs/optimizers/baselines.md``).

    ``lr > 0`` (``alpha``); ``beta1, beta2`` in ``[0, 1)``, the decay rates of the two moment
    estimates; ``eps > 0``, added to ``sqrt(v_hat)``; ``weight_decay >= 0`` (``tau``).
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_in_interval("beta1", self.beta1, 0.0, 1.0, closed_low=True)
        check_in_interval("beta2", self.beta2, 0.0, 1.0, closed_low=True)
        check_positive("eps", self.eps)
        check_non_negative("weight_decay", self.weight_decay)


class AdamState(NamedTuple):
    """Biased moment estimates per trainable layer, shaped like ``W~``.

    ``first_moment[i]`` is ``m`` and ``second_moment[i]`` is ``v`` of Kingma & Ba (2015). The step
    number ``t`` is the optimizer's ``step_count + 1``.
    """

    first_moment: tuple
    second_moment: tuple

    def check_loaded(self, prefix: str) -> None:
        """A loaded second moment is a mean of squares: ``v >= 0`` (``sqrt(v)`` in the step)."""
        for i, v in enumerate(self.second_moment):
            check_non_negative_entry(f"{prefix}.second_moment.{i}", v)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015, Algorithm 1) with coupled L2 weight decay.

    At step ``t = 1, 2, ...``, per trainable layer, elementwise, with ``d = grad f + tau W~``::

        m_t = beta1 m_{t-1} + (1 - beta1) d             m_0 = 0
        v_t = beta2 v_{t-1} + (1 - beta2) d^2           v_0 = 0
        m_hat = m_t / (1 - beta1^t)                     (bias corrections)
        v_hat = v_t / (1 - beta2^t)
        W~_t = W~_{t-1} - alpha m_hat / (sqrt(v_hat) + eps)

    All arrays have the shape ``(d_out, D)`` of ``W~``. Tested by
    ``tests/optim/test_baselines.py::test_adam_matches_algorithm_1``.
    """

    config_class = AdamConfig

    def _initial_state(self) -> AdamState:
        zeros = zeros_like_weights(self.model)
        return AdamState(first_moment=zeros, second_moment=zeros)

    def _step(self, X, T):
        cfg = self.config
        loss, weights, regularised = regularised_gradients(self.model, X, T, cfg.weight_decay)
        t = self.step_count + 1
        first = tuple(
            _moving_average(m, d, cfg.beta1)
            for m, d in zip(self.state.first_moment, regularised, strict=True)
        )
        second = tuple(
            _moving_average(v, d, cfg.beta2, square=True)
            for v, d in zip(self.state.second_moment, regularised, strict=True)
        )
        check_new_state("Adam second moment", second)
        steps = [_adam_direction(m, v, cfg, t) for m, v in zip(first, second, strict=True)]
        apply_steps(self.model, weights, steps, cfg.lr)
        return loss, AdamState(first_moment=first, second_moment=second)


def _moving_average(average, d, beta: float, square: bool = False):
    """``beta a + (1 - beta) d`` (or ``beta a + (1 - beta) d d`` with ``square``), a new array.

    Accumulated in place in the new array it starts with ``(1 - beta) d``: the products and the sum
    of the written-out expression, in its order (the same bits), with fewer temporaries. ``average``
    and ``d`` are not written (they belong to the previous state and to the caller).
    """
    new = (1.0 - beta) * d
    if square:
        new *= d
    new += beta * average
    return new


def _adam_direction(m, v, cfg: AdamConfig, t: int):
    """``m_hat / (sqrt(v_hat) + eps)`` with the bias corrections of step ``t``, as one new array.

    ``m_hat = m / (1 - beta1^t)``, ``v_hat = v / (1 - beta2^t)``; the square root, ``+ eps`` and the
    division run in place on the two new arrays (same operations, same bits as the expression).
    """
    xp = backend.xp_of(m)
    denominator = v / (1.0 - cfg.beta2**t)  # v_hat
    xp.sqrt(denominator, out=denominator)
    denominator += cfg.eps
    direction = m / (1.0 - cfg.beta1**t)  # m_hat
    direction /= denominator
    return direction


# --- RMSprop ---


@dataclasses.dataclass(frozen=True)
class RMSpropConfig:
    """Options of :class:`RMSprop` (defaults and sources: ``docs/optimizers/baselines.md``).

    ``lr > 0`` (``alpha``); ``decay`` in ``[0, 1)``, ``rho`` of the running mean square;
    ``eps > 0``, added to its root; ``momentum`` in ``[0, 1)``, ``mu`` of the heavy-ball buffer on
    the scaled gradient; ``weight_decay >= 0`` (``tau``).
    """

    lr: float = 1e-2
    decay: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_in_interval("decay", self.decay, 0.0, 1.0, closed_low=True)
        check_positive("eps", self.eps)
        check_in_interval("momentum", self.momentum, 0.0, 1.0, closed_low=True)
        check_non_negative("weight_decay", self.weight_decay)


class RMSpropState(NamedTuple):
    """Per trainable layer, shaped like ``W~``: the running mean square ``s``, the buffer ``b``."""

    square_average: tuple
    momentum_buffer: tuple

    def check_loaded(self, prefix: str) -> None:
        """A loaded mean square is ``s >= 0`` (``sqrt(s)`` in the step)."""
        for i, s in enumerate(self.square_average):
            check_non_negative_entry(f"{prefix}.square_average.{i}", s)


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton 2012, lecture 6.5), as ``torch.optim.RMSprop`` writes it.

    Per trainable layer, elementwise, with ``d = grad f + tau W~``::

        s_{k+1} = rho s_k + (1 - rho) d^2                    s_0 = 0
        b_{k+1} = mu b_k + d / (sqrt(s_{k+1}) + eps)         b_0 = 0
        W~_{k+1} = W~_k - alpha b_{k+1}

    With ``mu = 0`` the step is ``alpha d / (sqrt(s) + eps)``. No bias correction. Tested by
    ``tests/optim/test_baselines.py::test_rmsprop_matches_written_out_recursion``.
    """

    config_class = RMSpropConfig

    def _initial_state(self) -> RMSpropState:
        zeros = zeros_like_weights(self.model)
        return RMSpropState(square_average=zeros, momentum_buffer=zeros)

    def _step(self, X, T):
        cfg = self.config
        loss, weights, regularised = regularised_gradients(self.model, X, T, cfg.weight_decay)
        square = tuple(
            _moving_average(s, d, cfg.decay, square=True)
            for s, d in zip(self.state.square_average, regularised, strict=True)
        )
        check_new_state("RMSprop mean square", square)
        buffer = tuple(
            _rmsprop_buffer(b, d, s, cfg)
            for b, d, s in zip(self.state.momentum_buffer, regularised, square, strict=True)
        )
        apply_steps(self.model, weights, buffer, cfg.lr)
        return loss, RMSpropState(square_average=square, momentum_buffer=buffer)


def _rmsprop_buffer(b, d, s, cfg: RMSpropConfig):
    """``mu b + d / (sqrt(s) + eps)``, a new array (``+ eps``, ``+ mu b`` in place: same bits)."""
    denominator = backend.xp_of(s).sqrt(s)
    denominator += cfg.eps
    new = d / denominator
    new += cfg.momentum * b
    return new
