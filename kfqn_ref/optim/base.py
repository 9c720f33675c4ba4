"""The optimizer protocol shared by K-BFGS and the baselines.

An optimizer is built from a :class:`kfqn_ref.nn.Sequential` and a frozen, validated configuration
dataclass. It receives minibatches, not gradients, because K-BFGS needs a second forward/backward
pass on the same minibatch at the new weights::

    opt = KBFGS(model, KBFGSConfig(lr=0.3))
    loss = opt.step(X, T)          # loss at the weights BEFORE the step

A step is transactional: if the loss, a gradient or the new weights are not finite, the step is
refused with :class:`NonFiniteError` and the model's weights and the optimizer's state are left
exactly as they were.

State
-----
Each optimizer keeps its state in ``self.state``, a (nested) structure of frozen dataclasses,
NamedTuples, tuples/lists and arrays/numbers. :meth:`Optimizer.state_dict` flattens it, together
with the configuration, the step counter and the model's weights, into a ``dict`` of plain arrays
that ``numpy.savez`` writes and ``numpy.load(..., allow_pickle=False)`` reads back
(:func:`save_state` / :func:`load_state`). :meth:`Optimizer.load_state_dict` checks that the dict
comes from the same optimizer class, configuration and model shapes, and that every value lies in
its range (a state class declares its own ranges in a ``check_loaded`` method), before it changes
anything.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
import zipfile
from typing import Any

import numpy as np

from kfqn_ref import _checks, backend

# A step that produces a non-finite loss, gradient or weight raises it and is refused. It lives in
# the backend because the model raises it too (a forward pass that overflows).
NonFiniteError = _checks.NonFiniteError


# --------------------------------------------------------------------------------------------
# Validation helpers for configuration dataclasses (messages name the field and the range).
# --------------------------------------------------------------------------------------------


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_positive(name: str, value) -> None:
    """Require ``value > 0``."""
    if _check_real(name, value) <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_non_negative(name: str, value) -> None:
    """Require ``value >= 0``."""
    if _check_real(name, value) < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_open_unit_interval(name: str, value) -> None:
    """Require ``0 < value < 1``."""
    number = _check_real(name, value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {value}")


def check_unit_interval_closed_open(name: str, value) -> None:
    """Require ``0 <= value < 1`` (decay rates where 0 means 'no averaging')."""
    number = _check_real(name, value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")


def check_int_at_least(name: str, value, minimum: int) -> None:
    """Require an integer ``value >= minimum``."""
    if not _checks.is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def check_choice(name: str, value, choices: tuple) -> None:
    """Require ``value`` to be one of ``choices`` (used for enum-valued options)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Flattening nested state into plain arrays and back (no pickle anywhere).
# --------------------------------------------------------------------------------------------


def _children(node) -> list[tuple[str, Any]] | None:
    """Named children of a container node, or None for a leaf."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [(field.name, getattr(node, field.name)) for field in dataclasses.fields(node)]
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return [(name, getattr(node, name)) for name in node._fields]
    if isinstance(node, (list, tuple)):
        return [(str(i), child) for i, child in enumerate(node)]
    return None


def iter_leaves(node, prefix: str):
    """Yield ``(path, leaf)`` for every array or number in a nested state, without copying."""
    children = _children(node)
    if children is None:
        yield prefix, node
        return
    for name, child in children:
        yield from iter_leaves(child, f"{prefix}.{name}")


def flatten_state(node, prefix: str) -> dict[str, np.ndarray]:
    """Flatten a nested state into ``{"prefix.path": host array}``.

    Leaves are arrays (copied to the host) and numbers (stored as 0-d arrays). Containers are
    dataclasses, NamedTuples, tuples and lists; their structure is NOT stored, it is taken from a
    template when loading (:func:`unflatten_like`).
    """
    return {path: np.array(backend.to_host(leaf)) for path, leaf in iter_leaves(node, prefix)}


def _rebuild(node, values: list):
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        field_names = [field.name for field in dataclasses.fields(node)]
        return dataclasses.replace(node, **dict(zip(field_names, values, strict=True)))
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*values)
    if isinstance(node, tuple):
        return tuple(values)
    return list(values)


def _leaf_like(template, stored: np.ndarray, key: str):
    """Convert a stored array to the template leaf's type, checking shape and dtype."""
    if isinstance(template, (bool, np.bool_)):
        if stored.shape != () or stored.dtype.kind != "b":
            raise ValueError(
                f"state entry {key!r} must be a boolean scalar, got {stored.dtype}{stored.shape}"
            )
        return bool(stored)
    if isinstance(template, (int, np.integer)):
        if stored.shape != () or stored.dtype.kind not in "iu":
            raise ValueError(
                f"state entry {key!r} must be an integer scalar, got {stored.dtype}{stored.shape}"
            )
        return int(stored)
    if isinstance(template, (float, np.floating)):
        if stored.shape != () or stored.dtype.kind != "f":
            raise ValueError(
                f"state entry {key!r} must be a float scalar, got {stored.dtype}{stored.shape}"
            )
        if not np.isfinite(stored):
            raise ValueError(f"state entry {key!r} must be finite, got {stored}")
        return float(stored)
    template_shape = tuple(template.shape)
    if stored.shape != template_shape or stored.dtype != template.dtype:
        raise ValueError(
            f"state entry {key!r} has shape {stored.shape} and dtype {stored.dtype}; "
            f"this optimizer expects shape {template_shape} and dtype {template.dtype} "
            "(a state dict from another model or optimizer?)"
        )
    if stored.dtype.kind == "f" and not np.all(np.isfinite(stored)):
        raise ValueError(f"state entry {key!r} contains NaN or Inf")
    return backend.xp_of(template).asarray(stored)


def unflatten_like(template, flat: dict[str, np.ndarray], prefix: str):
    """Inverse of :func:`flatten_state`, using ``template`` for the structure, shapes and dtypes."""
    children = _children(template)
    if children is None:
        if prefix not in flat:
            raise ValueError(f"state dict is missing entry {prefix!r}")
        return _leaf_like(template, np.asarray(flat[prefix]), prefix)
    values = [unflatten_like(child, flat, f"{prefix}.{name}") for name, child in children]
    return _rebuild(template, values)


def check_loaded_values(node, prefix: str) -> None:
    """Let every state class in a loaded state check its own values.

    :func:`unflatten_like` checks shapes, dtypes and finiteness only. A state class (a
    NamedTuple or dataclass) whose entries have a range, such as a counter that cannot exceed a
    memory or a scale that must be positive, declares a method ``check_loaded(prefix)`` that
    raises ``ValueError`` naming the offending entry (``f"{prefix}.<field>"``). This walks the
    state and calls it on every node that has one.
    """
    check = getattr(node, "check_loaded", None)
    if check is not None:
        check(prefix)
    for name, child in _children(node) or ():
        check_loaded_values(child, f"{prefix}.{name}")


def check_non_negative_entry(key: str, array) -> None:
    """Raise ``ValueError`` naming ``key`` if a loaded array or number has a negative entry."""
    if bool(backend.xp_of(array).any(array < 0)):
        raise ValueError(f"state entry {key!r} must be >= 0 everywhere, got a negative entry")


def save_state(path: str | os.PathLike, state: dict[str, np.ndarray]) -> None:
    """Write a state dict with ``numpy.savez`` (plain arrays, no pickle)."""
    np.savez(path, **state)


def load_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict written by :func:`save_state` (``allow_pickle=False``).

    Raises
    ------
    ValueError
        If the file is not a readable ``.npz`` archive of plain arrays.
    """
    try:
        return backend.read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"cannot read optimizer state from {os.fspath(path)!r}: {error}"
        ) from error


# --------------------------------------------------------------------------------------------
# The protocol.
# --------------------------------------------------------------------------------------------


class Optimizer(abc.ABC):
    """Base class: minibatch in, loss out; transactional steps; plain-array state.

    Subclasses set ``config_class`` and implement :meth:`_initial_state` and :meth:`_step`.
    ``_step`` may set the model's weights (K-BFGS evaluates the new weights), returns
    ``(loss, new_state)`` and must not mutate ``self.state`` in place.
    """

    config_class: type = None  # the frozen dataclass of this optimizer's options
    #: Trainable layer types this optimizer can precondition; ``None`` means any.
    supported_layers: tuple[type, ...] | None = None

    def __init__(self, model, config=None, **options):
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
    def step(self, X, T) -> float:
        """Take one optimisation step on the minibatch ``(X, T)``; return the loss before it.

        Raises
        ------
        ValueError, TypeError
            For a minibatch the model rejects (shapes, dtypes, NaN/Inf, targets outside the
            loss's domain), or if ``X`` and ``T`` hold different numbers of samples.
        NonFiniteError
            If the loss, a gradient or the new weights are not finite. Weights and state are then
            unchanged.
        """
        self._check_batch(X, T)
        saved_weights = self.model.weights()
        try:
            loss, new_state = self._step(X, T)
            require_finite("loss", loss)
            for i, weight in enumerate(self.model.weights()):
                require_finite(f"new weights of trainable layer {i}", weight)
            for path, leaf in iter_leaves(new_state, "state"):
                require_finite(path, leaf)
        except BaseException:
            self.model.set_weights(saved_weights)
            raise
        self.state = new_state
        self.step_count += 1
        return float(loss)

    def _check_batch(self, X, T) -> None:
        if not hasattr(X, "shape") or not hasattr(T, "shape"):
            raise TypeError("X and T must be arrays")
        if len(X.shape) == 0 or len(T.shape) == 0 or X.shape[0] != T.shape[0]:
            raise ValueError(
                "X and T must hold the same number of samples along axis 0, "
                f"got X {tuple(X.shape)} and T {tuple(T.shape)}"
            )
        if X.shape[0] < 1:
            raise ValueError("the minibatch must hold at least one sample")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-identically: plain host arrays, no objects.

        Keys: ``optimizer`` (class name), ``config.<field>``, ``step_count``, ``weights.<i>``
        (the model's homogeneous weights) and ``state.<path>`` (the flattened optimizer state).
        """
        flat = {
            "optimizer": np.array(type(self).__name__),
            "step_count": np.array(self.step_count),
        }
        for field in dataclasses.fields(self.config):
            value = _config_value_for_storage(getattr(self.config, field.name))
            flat[f"config.{field.name}"] = np.array(value)
        for i, weight in enumerate(self.model.weights()):
            flat[f"weights.{i}"] = np.array(backend.to_host(weight))
        flat.update(flatten_state(self.state, "state"))
        return flat

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict`; validate everything before changing anything.

        Raises
        ------
        ValueError
            If the dict comes from another optimizer class, configuration or model shape, misses
            entries or holds entries this optimizer does not have, holds non-finite numbers, a
            negative ``step_count``, or a value outside the range its state class declares
            (``check_loaded``, e.g. an L-BFGS ``count`` above the memory or a ``gamma <= 0``).
            The message names the entry; nothing is changed.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        stored_name = str(np.asarray(state.get("optimizer", "")))
        if stored_name != type(self).__name__:
            raise ValueError(
                f"state dict was written by optimizer {stored_name!r}, not {type(self).__name__!r}"
            )
        for field in dataclasses.fields(self.config):
            key = f"config.{field.name}"
            expected = np.array(_config_value_for_storage(getattr(self.config, field.name)))
            if key not in state or not np.array_equal(np.asarray(state[key]), expected):
                raise ValueError(
                    f"state dict has {key} = {state.get(key)!r}, this optimizer has {expected!r}; "
                    "build the optimizer with the same configuration before loading"
                )
        template_weights = self.model.weights()
        weights = [
            unflatten_like(template, state, f"weights.{i}")
            for i, template in enumerate(template_weights)
        ]
        if f"weights.{len(template_weights)}" in state:
            raise ValueError(
                "state dict holds more weight arrays than the model has trainable layers"
            )
        known = self._state_dict_keys()
        unknown = [key for key in state if key not in known]
        if unknown:
            raise ValueError(
                f"state dict holds entries this optimizer does not have: {unknown!r} "
                "(a state dict from another version or configuration?)"
            )
        new_state = unflatten_like(self.state, state, "state")
        check_loaded_values(new_state, "state")
        step_count = unflatten_like(0, state, "step_count")
        if step_count < 0:
            raise ValueError(f"state entry 'step_count' must be >= 0, got {step_count}")
        self.model.set_weights(weights)
        self.state = new_state
        self.step_count = step_count

    def _state_dict_keys(self) -> set[str]:
        """The keys :meth:`state_dict` writes, without copying any array."""
        keys = {"optimizer", "step_count"}
        keys.update(f"config.{field.name}" for field in dataclasses.fields(self.config))
        keys.update(f"weights.{i}" for i in range(len(self.model.trainable_indices)))
        keys.update(path for path, _ in iter_leaves(self.state, "state"))
        return keys


def _config_value_for_storage(value):
    """Enum options are stored by value; everything else as it is."""
    return getattr(value, "value", value)


def require_finite(name: str, value) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if ``value`` holds NaN or Inf."""
    module = backend.xp_of(value)
    array = module.asarray(value)
    if array.dtype.kind in "fc" and not bool(module.all(module.isfinite(array))):
        raise NonFiniteError(f"{name} is not finite; the step was refused and nothing was changed")
