"""Data sets that need no download, minibatch streams, and loaders for files the user gives.

Embedded data sets
------------------
* :func:`digits_autoencoder` / :func:`digits_classification`: the 1,797 8x8 handwritten digits that
  ship with scikit-learn (``sklearn.datasets.load_digits``; no network access), pixels scaled from
  ``0..16`` to ``[0, 1]``. The autoencoder task is the paper's MNIST autoencoder in miniature
  (targets = inputs, sigmoid cross-entropy); the classification task feeds a small CNN.
* :func:`synthetic_regression`: a seeded linear least-squares problem ``T = X W*^T + noise``.

Minibatches
-----------
:func:`minibatches` draws a seeded permutation per epoch and yields ``(X, T)`` slices, so every
optimizer in a comparison sees the same minibatch stream (conventions §8: same seed, same bits).

User files
----------
:func:`load_npz` reads inputs and targets from a ``.npz`` file with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from typing import Iterator, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from kfqn_ref import backend
from kfqn_ref._checks import check_float_array, check_int, check_non_negative

#: Largest pixel value of scikit-learn's digits (they are counts 0..16 of a 4x4 block).
DIGITS_MAX_PIXEL = 16.0


class Dataset(NamedTuple):
    """A named pair of input and target arrays with the same number of samples (axis 0)."""

    name: str
    X: np.ndarray
    T: np.ndarray


def _load_digits_pixels(dtype) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits  # optional dependency
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "the embedded digits data set comes with scikit-learn: pip install 'kfqn-ref[data]'"
        ) from error
    bunch = load_digits()
    pixels = (bunch.data / DIGITS_MAX_PIXEL).astype(backend.resolve_dtype(dtype))
    return pixels, bunch.target.astype(np.int64)


def digits_autoencoder(dtype: DTypeLike = None) -> Dataset:
    """Digits as an autoencoder task: ``X = T``, shape ``(1797, 64)``, values in ``[0, 1]``."""
    pixels, _ = _load_digits_pixels(dtype)
    return Dataset("digits-autoencoder", pixels, pixels.copy())


def digits_classification(dtype: DTypeLike = None) -> Dataset:
    """Digits as images for a CNN: ``X`` of shape ``(1797, 1, 8, 8)``, ``T`` class indices 0..9."""
    pixels, labels = _load_digits_pixels(dtype)
    return Dataset("digits-classification", pixels.reshape(-1, 1, 8, 8), labels)


def synthetic_regression(
    n_samples: int,
    d_in: int,
    d_out: int,
    *,
    noise: float = 0.1,
    seed: int = 0,
    dtype: DTypeLike = None,
) -> Dataset:
    """A seeded least-squares problem ``T = X W*^T + noise * E`` with ``X, W*, E`` standard normal.

    Shapes: ``X (n_samples, d_in)``, ``T (n_samples, d_out)``. ``n_samples``, ``d_in``, ``d_out``
    are integers ``>= 1``, ``seed`` an integer ``>= 0``, ``noise`` a finite real ``>= 0``: a value
    of another type raises ``TypeError``, one out of range ``ValueError``.
    """
    for name, value in (("n_samples", n_samples), ("d_in", d_in), ("d_out", d_out)):
        check_int(name, value, minimum=1)
    noise = check_non_negative("noise", noise)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    X = rng.standard_normal((n_samples, d_in))
    W_star = rng.standard_normal((d_out, d_in))
    T = X @ W_star.T + noise * rng.standard_normal((n_samples, d_out))
    resolved = backend.resolve_dtype(dtype)
    return Dataset("synthetic-regression", X.astype(resolved), T.astype(resolved))


def minibatches(
    dataset: Dataset, batch_size: int, *, seed: int = 0, epochs: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Return an iterator of ``(X, T)`` minibatches of ``batch_size`` samples, ``epochs`` times.

    Each epoch draws a fresh permutation from one ``numpy.random.Generator(seed)``; the last
    ``n mod batch_size`` samples of each permutation are dropped so that every minibatch has the
    same size (the K-BFGS pre-pass and pair averaging assume it). The arguments are checked on
    the call, before any minibatch is drawn: ``len(T) == len(X) = n`` (``ValueError``);
    ``batch_size`` in ``[1, n]``, ``epochs >= 1``, ``seed >= 0``, each an integer (``TypeError``
    for another type, ``ValueError`` out of range).
    """
    if not (hasattr(dataset, "X") and hasattr(dataset, "T")):
        raise TypeError(
            f"dataset must be a kfqn_ref.data.Dataset (name, X, T), got {type(dataset).__name__}"
        )
    n, n_targets = len(dataset.X), len(dataset.T)
    if n_targets != n:
        raise ValueError(
            f"dataset.T must hold one target per input: len(dataset.X) = {n} but "
            f"len(dataset.T) = {n_targets}"
        )
    batch_size = check_int("batch_size", batch_size, minimum=1, maximum=n)
    epochs = check_int("epochs", epochs, minimum=1)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    return _minibatch_stream(dataset, batch_size, rng, epochs)


def _minibatch_stream(dataset: Dataset, batch_size: int, rng, epochs: int):
    """The generator behind :func:`minibatches` (arguments already checked)."""
    n = len(dataset.X)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield dataset.X[index], dataset.T[index]


def _read_npz_arrays(path, x_key: str, t_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x_key`` and ``t_key`` of the ``.npz`` archive at ``path`` (``backend.read_npz``)."""
    arrays = backend.read_npz(path)
    missing = [key for key in (x_key, t_key) if key not in arrays]
    if missing:
        raise ValueError(f"missing arrays {missing}; the file holds {sorted(arrays)}")
    return arrays[x_key], arrays[t_key]


def load_npz(
    path: str | os.PathLike, *, x_key: str = "X", t_key: str = "T", dtype: DTypeLike = None
) -> Dataset:
    """Load a data set from a ``.npz`` file holding arrays ``x_key`` and ``t_key``.

    Inputs are converted to ``dtype`` (float64 by default); integer targets (class indices) are
    kept as integers, floating targets converted to ``dtype``. Files are read with
    ``allow_pickle=False``. ``ValueError`` if the file cannot be read, a key is missing, the
    sample counts differ, or an entry is not finite.
    """
    try:
        X, T = _read_npz_arrays(path, x_key, t_key)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"cannot read data set from {os.fspath(path)!r}: {error}") from error
    resolved = backend.resolve_dtype(dtype)
    for key, array in ((x_key, X), (t_key, T)):
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{key} must hold numbers, got dtype {array.dtype}")
    if X.ndim < 2 or T.ndim < 1 or X.shape[0] != T.shape[0]:
        raise ValueError(
            f"{x_key} must be (n, ...) and {t_key} (n, ...) with the same n, "
            f"got {X.shape} and {T.shape}"
        )
    X = check_float_array(x_key, X.astype(resolved))
    if T.dtype.kind == "f":
        T = check_float_array(t_key, T.astype(resolved))
    else:
        T = T.astype(np.int64)
    return Dataset(os.path.basename(os.fspath(path)), X, T)
