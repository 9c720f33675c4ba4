"""The array module in use and the dtype policy.

Every piece of kfqn_ref that touches data goes through this module, so that the same code runs on
NumPy (the default, the reference) and on CuPy (an optional GPU backend).

Array module
------------
* :func:`xp` returns the *current* array module (``numpy`` unless :func:`use_cupy` was called).
* :func:`xp_of` returns the module that owns a given array (``cupy`` for a ``cupy.ndarray``,
  ``numpy`` otherwise). Code that receives arrays should prefer ``xp_of(array)`` over ``xp()``.
* :func:`to_host` copies an array to host memory as a ``numpy.ndarray`` (a no-op for NumPy).
  Host transfers are always explicit.
* :func:`read_npz` reads every array of a ``.npz`` archive into host memory, never with pickle.

dtype policy
------------
float64 is the reference precision (``DEFAULT_DTYPE``); float32 is allowed for speed. Nothing else
is: :func:`resolve_dtype` rejects integer, complex and half-precision types with a ``TypeError``.
See ``docs/conventions.md``.
"""

from __future__ import annotations

import os
import types
from typing import TypeAlias

import numpy as np
from numpy.typing import DTypeLike

#: What the type hints of public functions call an array: a ``numpy.ndarray``, or a
#: ``cupy.ndarray`` under the CuPy backend (the two share the interface the package uses).
Array: TypeAlias = np.ndarray

#: The reference precision.
DEFAULT_DTYPE = np.dtype(np.float64)
#: The floating dtypes kfqn_ref computes in.
SUPPORTED_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

_current_module: types.ModuleType = np


def xp() -> types.ModuleType:
    """Return the array module currently selected (``numpy`` by default)."""
    return _current_module


def use_numpy() -> None:
    """Select NumPy as the array module (the default)."""
    global _current_module
    _current_module = np


def use_cupy() -> None:
    """Select CuPy as the array module.

    ``ImportError`` if CuPy is not installed (``pip install 'kfqn-ref[cupy]'``) or no CUDA device
    is usable.
    """
    global _current_module
    try:
        import cupy  # optional dependency, imported on request only
    except ImportError as error:
        raise ImportError(
            "use_cupy() needs the optional CuPy backend: pip install 'kfqn-ref[cupy]'"
        ) from error
    _require_cuda_device(cupy)
    _current_module = cupy


def _require_cuda_device(cupy) -> None:
    """Raise ``ImportError`` unless CuPy sees at least one CUDA device.

    ``getDeviceCount`` raises CuPy's ``CUDARuntimeError`` (a ``RuntimeError``) when there is no
    device or no driver; that error becomes the ``ImportError`` :func:`use_cupy` documents.
    """
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except RuntimeError as error:
        raise ImportError(f"use_cupy() found CuPy but no usable CUDA device: {error}") from error
    if count < 1:
        raise ImportError("use_cupy() found CuPy but no CUDA device (getDeviceCount() == 0)")


def xp_of(*arrays: Array) -> types.ModuleType:
    """Return the array module owning ``arrays``.

    That is ``cupy`` if any of them is a CuPy array, else ``numpy``.
    """
    for array in arrays:
        if type(array).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def to_host(array: Array) -> np.ndarray:
    """Return ``array`` as a host ``numpy.ndarray`` (copying from the GPU when needed)."""
    if type(array).__module__.split(".")[0] == "cupy":
        return array.get()
    return np.asarray(array)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read all arrays of the ``.npz`` archive at ``path`` into memory (``allow_pickle=False``).

    The file is opened here and closed on every path, also when it is not a valid archive
    (``np.load`` given a path leaks its handle then); ``archive[key]`` reads the whole member, so
    the returned arrays do not depend on the closed file. ``ValueError`` if the file holds a single
    ``.npy`` array, an object array, or is not a valid archive; ``OSError`` if it cannot be opened.
    """
    with open(path, "rb") as file:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("expected a .npz archive of named arrays, got a single .npy array")
        with archive:
            return {key: archive[key] for key in archive.files}


def resolve_dtype(dtype: DTypeLike = None) -> np.dtype:
    """Return the validated floating dtype (float64 or float32, else ``TypeError``).

    ``None`` means the default, float64.
    """
    if dtype is None:
        return DEFAULT_DTYPE
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype must be float64 or float32, got {dtype!r}") from error
    if resolved not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float64 or float32, got {resolved}")
    return resolved
