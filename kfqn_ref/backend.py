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

import numbers
import types

import numpy as np

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

    Raises
    ------
    ImportError
        If CuPy is not installed (``pip install 'kfqn-ref[cupy]'``) or no CUDA device is usable.
    """
    global _current_module
    try:
        import cupy  # noqa: PLC0415 - optional dependency, imported on request only
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


def xp_of(*arrays) -> types.ModuleType:
    """Return the array module owning ``arrays``.

    That is ``cupy`` if any of them is a CuPy array, else ``numpy``.
    """
    for array in arrays:
        if type(array).__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415

            return cupy
    return np


def to_host(array) -> np.ndarray:
    """Return ``array`` as a host ``numpy.ndarray`` (copying from the GPU when needed)."""
    if type(array).__module__.split(".")[0] == "cupy":
        return array.get()
    return np.asarray(array)


def is_int(value) -> bool:
    """Whether ``value`` is an integer argument: a Python or NumPy integer, but not a ``bool``.

    ``bool`` is an ``int`` subclass in Python; ``True`` as a size or an index is a mistake, not a 1.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def read_npz(path) -> dict[str, np.ndarray]:
    """Read all arrays of the ``.npz`` archive at ``path`` into memory (``allow_pickle=False``).

    The file is opened here and closed on every path, also when it is not a valid archive
    (``np.load`` given a path leaks its handle then); ``archive[key]`` reads the whole member, so
    the returned arrays do not depend on the closed file.

    Raises
    ------
    ValueError
        If the file holds a single ``.npy`` array, an object array, or is not a valid archive.
    OSError
        If the file cannot be opened.
    """
    with open(path, "rb") as file:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("expected a .npz archive of named arrays, got a single .npy array")
        with archive:
            return {key: archive[key] for key in archive.files}


def resolve_dtype(dtype=None) -> np.dtype:
    """Return the validated floating dtype; ``None`` means the default, float64.

    Raises
    ------
    TypeError
        If ``dtype`` is not float64 or float32.
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


class NonFiniteError(ValueError):
    """A computation on finite inputs produced NaN or Inf (an overflow).

    The computation is a forward pass, a loss, a gradient or an optimizer's new weights.
    An optimizer step that raises it is refused.
    """


def check_computed_finite(name: str, array) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if a computed ``array`` holds NaN or Inf."""
    module = xp_of(array)
    if not bool(module.all(module.isfinite(array))):
        raise NonFiniteError(
            f"{name} is not finite (NaN or Inf from finite inputs: the computation overflowed)"
        )


def check_float_dtype(name: str, array, dtype=None):
    """Validate the kind and dtype of an input array (O(1): no entry is read); return it unchanged.

    ``TypeError`` naming ``name`` unless ``array`` is an ndarray of float64 or float32, and, when
    ``dtype`` is given, of exactly that dtype (no silent casting).
    """
    module = xp_of(array)
    if not isinstance(array, module.ndarray):
        raise TypeError(
            f"{name} must be an array of float64 or float32, got {type(array).__name__}"
        )
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must have dtype float64 or float32, got {array.dtype}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} has dtype {array.dtype} but {np.dtype(dtype)} was expected "
            "(mixed dtypes are not cast silently; convert with .astype first)"
        )
    return array


def check_float_array(name: str, array, dtype=None, ndim: int | None = None):
    """Validate an input array and return it unchanged.

    Checks, in order: kind and dtype as :func:`check_float_dtype` (``TypeError``), that it has
    ``ndim`` dimensions when given (``ValueError``), and that every entry is finite (``ValueError``,
    the one O(n) check). The messages name ``name`` and the expected form.
    """
    check_float_dtype(name, array, dtype)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(array.shape)}")
    module = xp_of(array)
    if not bool(module.all(module.isfinite(array))):
        raise ValueError(f"{name} contains NaN or Inf; every entry must be finite")
    return array
