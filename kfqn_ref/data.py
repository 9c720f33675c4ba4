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
import zlib
from typing import Iterator, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from kfqn_ref import backend
from kfqn_ref._checks import check_finite_entries, check_int, check_non_negative

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


def _read_data_npz(path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive at ``path``; ``ValueError`` naming it if unreadable."""
    try:
        return backend.read_npz(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read data set from {os.fspath(path)!r}: {error}") from error


def load_npz(
    path: str | os.PathLike, *, x_key: str = "X", t_key: str = "T", dtype: DTypeLike = None
) -> Dataset:
    """Load a data set from a ``.npz`` file holding arrays ``x_key`` and ``t_key``.

    Inputs are converted to ``dtype`` (float64 by default); integer targets (class indices) are
    kept as ``int64``, floating targets converted to ``dtype``. Files are read with
    ``allow_pickle=False``. ``ValueError`` if the file cannot be read, a key is missing, the
    sample counts differ, an entry is not finite, a value overflows ``dtype`` or an integer
    target does not fit ``int64``.
    """
    arrays = _read_data_npz(path)
    missing = [key for key in (x_key, t_key) if key not in arrays]
    if missing:
        raise ValueError(
            f"cannot read data set from {os.fspath(path)!r}: missing arrays {missing}; "
            f"the file holds {sorted(arrays)}"
        )
    X, T = arrays[x_key], arrays[t_key]
    resolved = backend.resolve_dtype(dtype)
    for key, array in ((x_key, X), (t_key, T)):
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{key} must hold numbers, got dtype {array.dtype}")
    if X.ndim < 2:
        raise ValueError(f"{x_key} must have shape (n, ...) with n samples, got {X.shape}")
    if T.ndim < 1 or X.shape[0] != T.shape[0]:
        raise ValueError(
            f"{x_key} must be (n, ...) and {t_key} (n, ...) with the same n, "
            f"got {X.shape} and {T.shape}"
        )
    X = _as_float(x_key, X, resolved)
    T = _as_float(t_key, T, resolved) if T.dtype.kind == "f" else _as_int64(t_key, T)
    return Dataset(os.path.basename(os.fspath(path)), X, T)


def _as_float(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` (of numbers) as finite floats of ``dtype``; a cast that overflows says so."""
    if array.dtype.kind == "f":
        check_finite_entries(name, array)
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if not np.all(np.isfinite(converted)):
        raise ValueError(
            f"{name} holds values beyond the range of {dtype} "
            f"(largest |{name}| = {float(np.max(np.abs(array)))!r}); pass a wider dtype"
        )
    return converted


def _as_int64(name: str, array: np.ndarray) -> np.ndarray:
    """Integer ``array`` as ``int64``; ``uint64`` values above the int64 range would wrap."""
    if array.size and array.dtype == np.uint64 and array.max() > np.iinfo(np.int64).max:
        raise ValueError(
            f"{name} holds integers up to {array.max()}, beyond int64 (they would wrap to "
            "negative numbers)"
        )
    return array.astype(np.int64)


# --- user files for ``kfqn-ref train --data`` (docs/cli.md, "Your own data") -------------------

#: IDX element types: the third byte of the magic number -> the big-endian NumPy dtype.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the format of MNIST's ``*-idx3-ubyte``), gzip-compressed if ``*.gz``.

    Layout: the magic number ``00 00 t r`` (``t`` the element type of :data:`IDX_TYPES`, ``r``
    the number of dimensions), ``r`` big-endian uint32 sizes, then ``prod(sizes)`` elements in
    row-major order. Returns the array of shape ``sizes`` in native byte order.

    Raises
    ------
    ValueError
        If the file cannot be read, the magic number is not ``00 00 t r`` with a known ``t`` and
        ``r >= 1``, or the file length differs from what the sizes announce (checked before any
        element is read: a forged header allocates nothing).
    """
    try:
        raw = _read_maybe_gzip(path)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"cannot read IDX file {os.fspath(path)!r}: {error}") from error
    where = f"IDX file {os.fspath(path)!r}"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] < 1:
        raise ValueError(
            f"{where}: the magic number must be 00 00 <type> <ndim> with type one of "
            f"{sorted(hex(t) for t in IDX_TYPES)} and ndim >= 1, "
            f"got {raw[:4].hex(' ') or 'an empty file'}"
        )
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{where}: the header announces {ndim} sizes but the file ends first")
    sizes = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(sizes, dtype=object)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{where}: sizes {sizes} of {dtype.itemsize}-byte elements need {expected} bytes, "
            f"the file has {len(raw)}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(sizes)
        .astype(dtype.newbyteorder("="))
    )


def _read_maybe_gzip(path) -> bytes:
    """The bytes of ``path``, decompressed when its name ends in ``.gz``."""
    import gzip

    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read()


def load_arrays(
    path: str | os.PathLike, labels: str | os.PathLike | None = None, *, dtype=None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs ``X`` and optional class labels ``y`` from the user's files, checked.

    ``path`` is a ``.npz`` archive holding ``X`` and optionally ``y`` (``labels`` must then be
    ``None``), or an IDX file of inputs with ``labels`` an IDX file of labels. ``X`` has shape
    ``(n, ...)`` and holds numbers: ``uint8`` pixels are divided by 255, other numbers are
    converted to ``dtype`` (float64 by default). ``y`` has shape ``(n,)`` and holds integers
    ``>= 0``, returned as ``int64``.

    Raises
    ------
    ValueError
        A file that cannot be read, a missing ``X``, an array of the wrong kind or shape, sample
        counts that differ, a NaN or Inf, or a value that overflows ``dtype``; the message names
        the array and what was expected.
    """
    if os.fspath(path).endswith(".npz"):
        if labels is not None:
            raise ValueError("labels: a .npz file holds its own labels as array 'y'; drop --labels")
        X, y = _npz_inputs_and_labels(path)
    else:
        X = load_idx(path)
        y = None if labels is None else load_idx(labels)
    X = _as_float_inputs(X, backend.resolve_dtype(dtype))
    if y is not None:
        y = _as_labels(y, X.shape[0])
    return X, y


def _npz_inputs_and_labels(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays ``X`` and ``y`` (or ``None``) of a user's ``.npz`` archive."""
    arrays = _read_data_npz(path)
    if "X" not in arrays:
        raise ValueError(
            f"{os.fspath(path)!r} must hold an array 'X' (inputs, shape (n, ...)) and optionally "
            f"'y' (labels, shape (n,)); it holds {sorted(arrays)}"
        )
    return arrays["X"], arrays.get("y")


def _as_float_inputs(X: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``X`` as finite floats of ``dtype`` (uint8 pixels scaled to [0, 1])."""
    if X.dtype.kind not in "fiu" or X.ndim < 2 or X.shape[0] < 1:
        raise ValueError(
            f"X must be an array of numbers of shape (n, ...) with n >= 1, "
            f"got dtype {X.dtype} and shape {X.shape}"
        )
    if X.dtype == np.uint8:
        return (X / 255.0).astype(dtype)
    return _as_float("X", X, dtype)


def _as_labels(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` as ``int64`` class indices, one per sample."""
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise ValueError(
            f"y must be integer class labels of shape ({n},) (one per sample of X), "
            f"got dtype {y.dtype} and shape {y.shape}"
        )
    if y.size and y.min() < 0:
        raise ValueError(f"y must hold labels >= 0, got values in [{y.min()}, {y.max()}]")
    return _as_int64("y", y)
