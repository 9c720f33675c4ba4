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

from kfqn_ref import backend

#: Largest pixel value of scikit-learn's digits (they are counts 0..16 of a 4x4 block).
DIGITS_MAX_PIXEL = 16.0


class Dataset(NamedTuple):
    """A named pair of input and target arrays with the same number of samples (axis 0)."""

    name: str
    X: np.ndarray
    T: np.ndarray


def _load_digits_pixels(dtype) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415 - optional dependency
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "the embedded digits data set comes with scikit-learn: pip install 'kfqn-ref[data]'"
        ) from error
    bunch = load_digits()
    pixels = (bunch.data / DIGITS_MAX_PIXEL).astype(backend.resolve_dtype(dtype))
    return pixels, bunch.target.astype(np.int64)


def digits_autoencoder(dtype=None) -> Dataset:
    """Digits as an autoencoder task: ``X = T``, shape ``(1797, 64)``, values in ``[0, 1]``."""
    pixels, _ = _load_digits_pixels(dtype)
    return Dataset("digits-autoencoder", pixels, pixels.copy())


def digits_classification(dtype=None) -> Dataset:
    """Digits as images for a CNN: ``X`` of shape ``(1797, 1, 8, 8)``, ``T`` class indices 0..9."""
    pixels, labels = _load_digits_pixels(dtype)
    return Dataset("digits-classification", pixels.reshape(-1, 1, 8, 8), labels)


def synthetic_regression(
    n_samples: int, d_in: int, d_out: int, *, noise: float = 0.1, seed: int = 0, dtype=None
) -> Dataset:
    """A seeded least-squares problem ``T = X W*^T + noise * E`` with ``X, W*, E`` standard normal.

    Shapes: ``X (n_samples, d_in)``, ``T (n_samples, d_out)``.
    """
    for name, value in (("n_samples", n_samples), ("d_in", d_in), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, d_in))
    W_star = rng.standard_normal((d_out, d_in))
    T = X @ W_star.T + noise * rng.standard_normal((n_samples, d_out))
    resolved = backend.resolve_dtype(dtype)
    return Dataset("synthetic-regression", X.astype(resolved), T.astype(resolved))


def minibatches(
    dataset: Dataset, batch_size: int, *, seed: int = 0, epochs: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(X, T)`` minibatches of exactly ``batch_size`` samples, ``epochs`` times over.

    Each epoch draws a fresh permutation from one ``numpy.random.Generator(seed)``; the last
    ``n mod batch_size`` samples of each permutation are dropped so that every minibatch has the
    same size (the K-BFGS pre-pass and pair averaging assume it).
    """
    n = dataset.X.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an integer, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}] (the data set size), got {batch_size}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield dataset.X[index], dataset.T[index]


def load_npz(path: str | os.PathLike, *, x_key: str = "X", t_key: str = "T", dtype=None) -> Dataset:
    """Load a data set from a ``.npz`` file holding arrays ``x_key`` and ``t_key``.

    Inputs are converted to ``dtype`` (float64 by default); integer targets (class indices) are
    kept as integers, floating targets converted to ``dtype``. Files are read with
    ``allow_pickle=False``.

    Raises
    ------
    ValueError
        If the file cannot be read, a key is missing, the sample counts differ, or an entry is
        not finite.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in (x_key, t_key) if key not in archive.files]
            if missing:
                raise ValueError(f"missing arrays {missing}; the file holds {archive.files}")
            X, T = archive[x_key], archive[t_key]
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read data set from {os.fspath(path)!r}: {error}") from error
    except ValueError as error:
        raise ValueError(f"cannot read data set from {os.fspath(path)!r}: {error}") from error
    resolved = backend.resolve_dtype(dtype)
    if X.dtype.kind not in "fiu":
        raise ValueError(f"{x_key} must hold numbers, got dtype {X.dtype}")
    if T.dtype.kind not in "fiu":
        raise ValueError(f"{t_key} must hold numbers, got dtype {T.dtype}")
    if X.ndim < 2 or T.ndim < 1 or X.shape[0] != T.shape[0]:
        raise ValueError(
            f"{x_key} must be (n, ...) and {t_key} (n, ...) with the same n, "
            f"got {X.shape} and {T.shape}"
        )
    X = backend.check_float_array(x_key, X.astype(resolved))
    if T.dtype.kind == "f":
        T = backend.check_float_array(t_key, T.astype(resolved))
    else:
        T = T.astype(np.int64)
    return Dataset(os.path.basename(os.fspath(path)), X, T)
