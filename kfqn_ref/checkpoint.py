"""Checkpoints of ``kfqn-ref train``: one ``.npz`` of plain arrays, versioned, written atomically.

A checkpoint holds

* ``format`` = :data:`FORMAT`, ``format_version`` = :data:`FORMAT_VERSION`, ``package_version``;
* ``identity``: a JSON object naming what the run is (problem, method, setting, seed, batch size,
  dtype, a digest of the data) — a checkpoint is resumed only by the same run;
* ``optimizer.<key>``: the optimizer's :meth:`~kfqn_ref.optim.Optimizer.state_dict` (weights,
  configuration, step count, state);
* ``log.<field>``: the :class:`~kfqn_ref.train.RunLog` so far.

It is written to a temporary file in the same folder, flushed to disk and renamed over the old one
(``os.replace`` is atomic), so a run killed at any moment leaves the previous checkpoint or the new
one, never a truncated file; it is read with ``allow_pickle=False`` (``docs/cli.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

from kfqn_ref import __version__, backend, data
from kfqn_ref.train import Divergence, RunLog

FORMAT = "kfqn-ref-checkpoint"
#: Bumped whenever the layout changes; a checkpoint of another version is refused.
FORMAT_VERSION = 1

#: The list attributes of :class:`~kfqn_ref.train.RunLog`, each stored as a float64 array.
_LIST_FIELDS = (
    "epoch_losses",
    "test_accuracies",
    "epoch_wall_seconds",
    "step_losses",
    "step_seconds",
)


def data_digest(dataset: data.Dataset) -> str:
    """SHA-256 of the shapes, dtypes and bytes of ``X`` and ``T`` (first 16 hex digits)."""
    digest = hashlib.sha256()
    for array in (dataset.X, dataset.T):
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def save(
    path: str | os.PathLike, state: dict[str, np.ndarray], log: RunLog, identity: dict
) -> None:
    """Write the optimizer ``state`` (a ``state_dict``), ``log`` and ``identity`` to ``path``.

    Atomic (:func:`kfqn_ref.backend.write_npz`): a temporary file in the same folder, then
    ``os.replace``; on any error the temporary file is removed and ``path`` keeps its content.
    """
    arrays = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "package_version": np.array(__version__),
        "identity": np.array(json.dumps(identity, sort_keys=True)),
        "log.name": np.array(log.name),
        "log.prepass_seconds": np.array(log.prepass_seconds),
        "log.elapsed": np.array(log.elapsed),
        "log.diverged_step": np.array(-1 if log.diverged is None else log.diverged.step),
        "log.diverged_reason": np.array("" if log.diverged is None else log.diverged.reason),
    }
    arrays.update({f"log.{field}": np.array(getattr(log, field), float) for field in _LIST_FIELDS})
    arrays.update({f"optimizer.{key}": value for key, value in state.items()})
    backend.write_npz(path, arrays)


class Checkpoint(NamedTuple):
    """A checkpoint as read: its run ``identity``, the optimizer's ``state`` dict, the ``log``."""

    identity: dict
    state: dict
    log: RunLog


def read(path: str | os.PathLike) -> Checkpoint:
    """Read the checkpoint at ``path`` once, after the format and version checks.

    Raises ``ValueError`` if the file is not a readable checkpoint or was written by another
    format or package version (as :func:`load`).
    """
    arrays = _read_checked(path)
    state = {
        key.removeprefix("optimizer."): value
        for key, value in arrays.items()
        if key.startswith("optimizer.")
    }
    return Checkpoint(_identity_of(arrays), state, _log_from(arrays))


def check_identity(stored: Checkpoint, identity: dict, path: str | os.PathLike) -> None:
    """``ValueError`` naming every entry of ``identity`` that differs from the checkpoint's."""
    differences = [
        f"{key} {stored.identity.get(key)!r} (this run: {identity.get(key)!r})"
        for key in sorted(set(stored.identity) | set(identity))
        if stored.identity.get(key) != identity.get(key)
    ]
    if differences:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to another run: it has "
            + "; ".join(differences)
        )


def identity(path: str | os.PathLike) -> dict:
    """The ``identity`` of the checkpoint at ``path`` (after the format and version checks).

    Raises ``ValueError`` as :func:`load`.
    """
    return read(path).identity


def load(path: str | os.PathLike, identity: dict) -> tuple[dict[str, np.ndarray], RunLog]:
    """The optimizer state dict and the log of the checkpoint at ``path``, for run ``identity``.

    Raises
    ------
    ValueError
        If the file is not a readable checkpoint, was written by another format or package
        version, or for another run: the message names every entry of ``identity`` that differs.
    """
    stored = read(path)
    check_identity(stored, identity, path)
    return stored.state, stored.log


def _identity_of(arrays: dict[str, np.ndarray]) -> dict:
    """The run identity stored in a checkpoint's ``arrays`` (a JSON string)."""
    return json.loads(str(arrays["identity"]))


def _read_checked(path) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint of this format, format version and package version."""
    where = f"checkpoint {os.fspath(path)!r}"
    try:
        arrays = backend.read_npz(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {where}: {error}") from error
    found = (str(arrays.get("format", "")), _int(arrays.get("format_version", -1)))
    if found != (FORMAT, FORMAT_VERSION):
        raise ValueError(
            f"{where} is not a {FORMAT} of version {FORMAT_VERSION} (found {found[0]!r}, "
            f"version {found[1]})"
        )
    written_by = str(arrays["package_version"])
    if written_by != __version__:
        raise ValueError(
            f"{where} was written by kfqn_ref {written_by}, this is {__version__}: "
            "a resumed run is bit-identical only within one version"
        )
    return arrays


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _log_from(arrays: dict[str, np.ndarray]) -> RunLog:
    step = int(arrays["log.diverged_step"])
    return RunLog(
        name=str(arrays["log.name"]),
        prepass_seconds=float(arrays["log.prepass_seconds"]),
        elapsed=float(arrays["log.elapsed"]),
        diverged=None if step < 0 else Divergence(step, str(arrays["log.diverged_reason"])),
        **{field: arrays[f"log.{field}"].tolist() for field in _LIST_FIELDS},
    )
