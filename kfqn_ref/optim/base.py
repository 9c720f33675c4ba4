"""The optimizer protocol shared by K-BFGS and the baselines.

An optimizer is built from a :class:`kfqn_ref.nn.Sequential` and a frozen, validated configuration
dataclass. It receives minibatches, not gradients, because K-BFGS needs a second forward/backward
pass on the same minibatch at the new weights::

    opt = KBFGS(model, KBFGSConfig(lr=0.3))
    loss = opt.step(X, T)          # loss at the weights BEFORE the step

A step is transactional: if the loss, a gradient, the new weights or a new state array are not
finite, the step is refused with :class:`NonFiniteError` and the model's weights and the
optimizer's state are left exactly as they were.

Where the finiteness checks live: each quantity is checked once, where the step produces it. The
loss and the gradients after the forward/backward pass (:func:`check_loss_and_gradients`), the new
weights before they are set (:func:`set_new_weights`), and each new state array that the new
weights do not already vouch for right where it is computed (an Adam second moment, a running
factor). A momentum buffer needs no check of its own: the new weights are the old ones plus a
linear map of it with a positive diagonal, so a NaN or Inf entry of it makes a new weight
non-finite. The state's flattening into plain arrays is :mod:`kfqn_ref.optim.state_io`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from typing import Any

import numpy as np

from kfqn_ref import _checks
from kfqn_ref.backend import Array, host_scalar
from kfqn_ref.optim import state_io

# A step that produces a non-finite loss, gradient, weight or state raises it and is refused.
NonFiniteError = _checks.NonFiniteError


def store_choice(config, name: str, choices: type[enum.Enum]) -> None:
    """Replace the option ``name`` of a frozen ``config`` by the member of ``choices`` it names.

    The option may be given as the member or as its value (``variant="2020"``), so a
    configuration written to JSON can be fed back (:func:`kfqn_ref._checks.check_choice`).
    """
    member = _checks.check_choice(name, getattr(config, name), choices)
    object.__setattr__(config, name, member)


def check_loss_and_gradients(loss: float, grads: Sequence[Array]) -> None:
    """Refuse the step (:class:`NonFiniteError`) on a NaN/Inf loss or gradient."""
    _checks.check_computed_finite("loss", loss)
    for i, grad in enumerate(grads):
        _checks.check_computed_finite(f"gradient of trainable layer {i}", grad)


def check_new_state(name: str, arrays: Sequence[Array]) -> None:
    """Refuse the step if a new state array (one per trainable layer) is not finite.

    For the state arrays the new weights do not vouch for (module docstring); the message reads
    ``"<name> of trainable layer <i> is not finite ..."``.
    """
    for i, array in enumerate(arrays):
        _checks.check_computed_finite(f"{name} of trainable layer {i}", array)


def set_new_weights(model, new_weights: Sequence[Array]) -> None:
    """Set the model's weights after one finiteness check of each new weight.

    ``new_weights`` must be fresh arrays of this step, which the model then owns (no copy).
    Raises :class:`NonFiniteError` naming the trainable layer (nothing is set then).
    """
    for i, weight in enumerate(new_weights):
        _checks.check_computed_finite(f"new weights of trainable layer {i}", weight)
    model.adopt_weights_unchecked(new_weights)  # fresh arrays of this step, the model's shapes


class Optimizer(abc.ABC):
    """Base class: minibatch in, loss out; transactional steps; plain-array state.

    Subclasses set ``config_class`` and implement :meth:`_initial_state` and :meth:`_step`.
    ``_step`` checks what it produces (see the module docstring), may set the model's weights
    (K-BFGS evaluates the new weights), returns ``(loss, new_state)`` and must not mutate
    ``self.state`` in place.
    """

    config_class: type = None  # the frozen dataclass of this optimizer's options
    #: Trainable layer types this optimizer can precondition; ``None`` means any.
    supported_layers: tuple[type, ...] | None = None

    def __init__(self, model, config=None, **options: Any) -> None:
        from kfqn_ref.nn import Sequential  # imported here: an import cycle at load time

        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a kfqn_ref.nn.Sequential, got {type(model).__name__}")
        if config is None:
            config = self.config_class(**options)
        elif options:
            raise TypeError("pass either a config object or keyword options, not both")
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config must be a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self._check_layers(model)
        self.model = model
        self.config = config
        self.step_count = 0
        self.state = self._initial_state()

    def _check_layers(self, model) -> None:
        if self.supported_layers is None:
            return
        for index in model.trainable_indices:
            layer = model.layers[index]
            if not isinstance(layer, self.supported_layers):
                names = ", ".join(cls.__name__ for cls in self.supported_layers)
                raise TypeError(
                    f"{type(self).__name__} supports trainable layers of type {names}; "
                    f"layers[{index}] is a {type(layer).__name__}"
                )

    # -- to implement ---------------------------------------------------------------------
    @abc.abstractmethod
    def _initial_state(self):
        """Return the state before the first step."""

    @abc.abstractmethod
    def _step(self, X, T) -> tuple[float, Any]:
        """Take one step on minibatch ``(X, T)``; return ``(loss, new_state)``."""

    # -- the protocol -----------------------------------------------------------------------
    def step(self, X: Array, T: Array) -> float:
        """Take one optimisation step on the minibatch ``(X, T)``; return the loss before it.

        ``ValueError`` / ``TypeError`` for a minibatch the model rejects (shapes, dtypes, NaN/Inf,
        targets outside the loss's domain, different sample counts in ``X`` and ``T``);
        :class:`NonFiniteError` if the loss, a gradient, the new weights or a new state array are
        not finite. Weights and state are unchanged whenever it raises.
        """
        _check_batch(X, T)
        saved_weights = self.model.weight_arrays()  # never written into: a snapshot, no copy
        try:
            loss, new_state = self._step(X, T)
        except BaseException:
            self.model.adopt_weights_unchecked(saved_weights)
            raise
        self.state = new_state
        self.step_count += 1
        return host_scalar(loss)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-identically: plain host arrays, no objects.

        Keys: ``optimizer`` (class name), ``config.<field>`` (enum options by their value),
        ``step_count``, ``weights.<i>`` (the model's homogeneous weights) and ``state.<path>``
        (the flattened optimizer state, :mod:`kfqn_ref.optim.state_io`).
        """
        return state_io.optimizer_state_dict(self)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict`; validate everything before changing anything.

        ``TypeError`` if ``state`` is not a dict; ``ValueError``, naming the entry, if it comes
        from another optimizer class, configuration or model shape, misses entries or holds ones
        this optimizer does not have, holds non-finite numbers, a negative ``step_count``, or a
        value outside the range its state class declares (``check_loaded``, e.g. an L-BFGS
        ``count`` above the memory or a ``gamma <= 0``). A rejected dict changes nothing.
        """
        weights, new_state, step_count = state_io.read_optimizer_state(self, state)
        self.model.set_weights(weights)
        self.state = new_state
        self.step_count = step_count


def _check_batch(X, T) -> None:
    """``X`` and ``T`` are arrays holding the same number (>= 1) of samples along axis 0."""
    _checks.check_array_like("X", X)
    _checks.check_array_like("T", T)
    if X.ndim < 2:
        raise ValueError(
            f"X must have shape (N, ...): N samples along axis 0, got shape {tuple(X.shape)}"
        )
    if T.ndim == 0 or X.shape[0] != T.shape[0]:
        raise ValueError(
            "X and T must hold the same number of samples along axis 0, "
            f"got X {tuple(X.shape)} and T {tuple(T.shape)}"
        )
    if X.shape[0] < 1:
        raise ValueError("the minibatch must hold at least one sample")
