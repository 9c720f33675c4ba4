"""An optimizer's state as plain arrays: flattening, loading with checks, ``.npz`` files.

Each optimizer keeps its state in ``self.state``, a (nested) structure of frozen dataclasses,
NamedTuples, tuples/lists, ``None`` (an entry a configuration does not keep) and arrays/numbers.
:func:`optimizer_state_dict` flattens it, with the configuration, the step counter and the model's
weights, into a ``dict`` of plain arrays that :func:`save_state` writes atomically and
:func:`load_state` reads back, never with pickle. :func:`read_optimizer_state` checks that the dict
comes from the same optimizer class, configuration and model shapes, and that every value lies in
its range (a state class declares its ranges in a ``check_loaded(prefix)`` method), before it
changes anything; it copies every array it keeps (``docs/reliability.md``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from kfqn_ref import _checks, backend
from kfqn_ref.backend import Array


def _children(node) -> list[tuple[str, Any]] | None:
    """Named children of a container node (``None`` has none), or None for a leaf."""
    if node is None:
        return []
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [(field.name, getattr(node, field.name)) for field in dataclasses.fields(node)]
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return [(name, getattr(node, name)) for name in node._fields]
    if isinstance(node, list | tuple):
        return [(str(i), child) for i, child in enumerate(node)]
    return None


def iter_leaves(node, prefix: str) -> Iterator[tuple[str, Any]]:
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
    if node is None:
        return None
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        field_names = [field.name for field in dataclasses.fields(node)]
        return dataclasses.replace(node, **dict(zip(field_names, values, strict=True)))
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*values)
    if isinstance(node, tuple):
        return tuple(values)
    return list(values)


#: Scalar leaves: (template types, accepted dtype kinds, how a message names them, conversion).
#: ``bool`` comes first: it is an ``int`` subclass.
_SCALAR_LEAVES = (
    (bool | np.bool_, "b", "a boolean", bool),
    (int | np.integer, "iu", "an integer", int),
    (float | np.floating, "f", "a float", float),
)


def _leaf_like(template, stored: np.ndarray, key: str):
    """Convert a stored array to the template leaf's type, checking shape, dtype, finiteness."""
    for types, kinds, kind_name, convert in _SCALAR_LEAVES:
        if isinstance(template, types):
            if stored.shape != () or stored.dtype.kind not in kinds:
                raise ValueError(
                    f"state entry {key!r} must be {kind_name} scalar, "
                    f"got {stored.dtype}{stored.shape}"
                )
            if kinds == "f" and not np.isfinite(stored):
                raise ValueError(f"state entry {key!r} must be finite, got {stored}")
            return convert(stored)
    template_shape = tuple(template.shape)
    if stored.shape != template_shape or stored.dtype != template.dtype:
        raise ValueError(
            f"state entry {key!r} has shape {stored.shape} and dtype {stored.dtype}; "
            f"this optimizer expects shape {template_shape} and dtype {template.dtype} "
            "(a state dict from another model or optimizer?)"
        )
    if stored.dtype.kind == "f" and not np.all(np.isfinite(stored)):
        raise ValueError(f"state entry {key!r} contains NaN or Inf")
    return backend.xp_of(template).array(stored)  # a copy: the caller's dict stays theirs


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


def check_non_negative_entry(key: str, array: Array) -> None:
    """Raise ``ValueError`` naming ``key`` if a loaded array or number has a negative entry."""
    if bool(backend.xp_of(array).any(array < 0)):
        raise ValueError(f"state entry {key!r} must be >= 0 everywhere, got a negative entry")


def stored_config_value(value):
    """Enum options are stored by value; everything else as it is."""
    return value.value if isinstance(value, enum.Enum) else value


def optimizer_state_dict(optimizer) -> dict[str, np.ndarray]:
    """The flat dict of :meth:`~kfqn_ref.optim.base.Optimizer.state_dict` (keys listed there)."""
    flat = {
        "optimizer": np.array(type(optimizer).__name__),
        "step_count": np.array(optimizer.step_count),
    }
    for field in dataclasses.fields(optimizer.config):
        value = stored_config_value(getattr(optimizer.config, field.name))
        flat[f"config.{field.name}"] = np.array(value)
    for i, weight in enumerate(optimizer.model.weights()):
        flat[f"weights.{i}"] = np.array(backend.to_host(weight))
    flat.update(flatten_state(optimizer.state, "state"))
    return flat


def _state_dict_keys(optimizer) -> set[str]:
    """The keys :func:`optimizer_state_dict` writes, without copying any array."""
    keys = {"optimizer", "step_count"}
    keys.update(f"config.{field.name}" for field in dataclasses.fields(optimizer.config))
    keys.update(f"weights.{i}" for i in range(len(optimizer.model.trainable_indices)))
    keys.update(path for path, _ in iter_leaves(optimizer.state, "state"))
    return keys


def _check_same_optimizer(optimizer, flat: dict) -> None:
    """``ValueError`` unless ``flat`` was written by this optimizer class and configuration."""
    stored_name = str(np.asarray(flat.get("optimizer", "")))
    if stored_name != type(optimizer).__name__:
        raise ValueError(
            f"state dict was written by optimizer {stored_name!r}, not {type(optimizer).__name__!r}"
        )
    for field in dataclasses.fields(optimizer.config):
        key = f"config.{field.name}"
        expected = np.array(stored_config_value(getattr(optimizer.config, field.name)))
        if key not in flat or not np.array_equal(np.asarray(flat[key]), expected):
            raise ValueError(
                f"state dict has {key} = {flat.get(key)!r}, this optimizer has {expected!r}; "
                "build the optimizer with the same configuration before loading"
            )


def read_optimizer_state(optimizer, flat: dict) -> tuple[list, Any, int]:
    """``(weights, state, step_count)`` from a flat dict, every value checked; nothing is set.

    The checks and their messages are listed at
    :meth:`~kfqn_ref.optim.base.Optimizer.load_state_dict`.
    """
    if not isinstance(flat, dict):
        raise TypeError(f"state must be a dict of arrays, got {type(flat).__name__}")
    _check_same_optimizer(optimizer, flat)
    template_weights = optimizer.model.weights()
    weights = [
        unflatten_like(template, flat, f"weights.{i}")
        for i, template in enumerate(template_weights)
    ]
    if f"weights.{len(template_weights)}" in flat:
        raise ValueError("state dict holds more weight arrays than the model has trainable layers")
    known = _state_dict_keys(optimizer)
    unknown = [key for key in flat if key not in known]
    if unknown:
        raise ValueError(
            f"state dict holds entries this optimizer does not have: {unknown!r} "
            "(a state dict from another version or configuration?)"
        )
    state = unflatten_like(optimizer.state, flat, "state")
    check_loaded_values(state, "state")
    step_count = unflatten_like(0, flat, "step_count")
    if step_count < 0:
        raise ValueError(f"state entry 'step_count' must be >= 0, got {step_count}")
    return weights, state, step_count


def save_state(path: str | os.PathLike, state: dict[str, np.ndarray]) -> None:
    """Write a state dict to ``path`` (plain arrays, no pickle), atomically, under that name.

    :func:`kfqn_ref.backend.write_npz`: ``TypeError`` for a ``state`` that is not a dict or holds
    an object array (nothing written); a failed write (``OSError``) leaves the previous file.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of arrays, got {_checks.describe(state)}")
    backend.write_npz(path, state)


def load_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict written by :func:`save_state` (never with pickle).

    ``ValueError`` naming the file and what is wrong if it cannot be opened or is not a valid
    ``.npz`` archive of plain arrays (:func:`kfqn_ref.backend.read_npz`).
    """
    try:
        return backend.read_npz(path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot read optimizer state from {os.fspath(path)!r}: {error}"
        ) from error
