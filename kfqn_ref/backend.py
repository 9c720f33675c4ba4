"""The array module in use and the dtype policy.

Every piece of kfqn_ref that touches data goes through this module, so that the same code runs on
NumPy (the default, the reference) and on CuPy (an optional GPU backend).

Array module
------------
* :func:`xp` returns the *current* array module: ``numpy`` unless :func:`use` selected ``cupy``
  or the environment variable ``KFQN_BACKEND=cupy`` did on import (``docs/backends.md``).
* :func:`xp_of` returns the module that owns a given array (``cupy`` for a ``cupy.ndarray``,
  ``numpy`` otherwise). Code that receives arrays should prefer ``xp_of(array)`` over ``xp()``.
* :func:`to_host` copies an array to host memory as a ``numpy.ndarray`` (a no-op for NumPy);
  :func:`host_scalar` and :func:`host_bool` make a Python float or bool of a 0-d array. Host
  transfers are always explicit (``docs/backends.md`` lists where the package makes them).
* :func:`read_npz` reads every array of a ``.npz`` archive into host memory, never with pickle;
  :func:`write_npz` writes one atomically (``docs/reliability.md``).

dtype policy
------------
float64 is the reference precision (``DEFAULT_DTYPE``); float32 is allowed for speed. Nothing else
is: :func:`resolve_dtype` rejects integer, complex and half-precision types with a ``TypeError``.
See ``docs/conventions.md``.
"""

from __future__ import annotations

import math
import os
import tempfile
import types
import zipfile
import zlib
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

#: The backends :func:`use` selects by name.
BACKENDS = ("numpy", "cupy")
#: The environment variable read once, on import, to select the backend (default ``numpy``).
BACKEND_VARIABLE = "KFQN_BACKEND"
#: How to install the CuPy backend (the CUDA 12 wheel, ``cupy-cuda12x``).
CUPY_INSTALL = "pip install 'kfqn-ref[cupy]'"

#: Array types registered with :func:`register_array_module`, mapped to their modules.
_array_modules: dict[type, types.ModuleType] = {}


def xp() -> types.ModuleType:
    """Return the array module currently selected (``numpy`` by default)."""
    return _current_module


def use(name: str) -> types.ModuleType:
    """Select the array module ``name`` (``"numpy"`` or ``"cupy"``) and return it.

    Only ``"cupy"`` imports CuPy. ``TypeError`` if ``name`` is not a string, ``ValueError``
    listing the valid names if it is unknown; ``ImportError`` saying what is missing (CuPy, or a
    CUDA device) and how to install the wheel. On any error the previous module stays selected.
    """
    global _current_module
    _current_module = _module_named(name, "name")
    return _current_module


def _module_named(name: str, what: str) -> types.ModuleType:
    """The module of the backend ``name`` (importing CuPy only for ``"cupy"``).

    ``what`` is how messages name the setting (``"name"``, ``"KFQN_BACKEND"``).
    """
    valid = ", ".join(repr(backend) for backend in BACKENDS)
    if not isinstance(name, str):
        raise TypeError(f"{what} must be one of the strings {valid}, got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"{what} must be one of {valid}, got {name!r}")
    if name == "numpy":
        return np
    try:
        import cupy  # optional dependency, imported on request only
    except ImportError as error:
        raise ImportError(
            f"{what}={name!r} selects CuPy, which is not installed: {CUPY_INSTALL} "
            "(the CUDA 12 wheel, cupy-cuda12x)"
        ) from error
    _require_cuda_device(cupy, what)
    return cupy


def _require_cuda_device(cupy, what: str) -> None:
    """Raise ``ImportError`` unless CuPy sees at least one CUDA device.

    ``getDeviceCount`` raises CuPy's ``CUDARuntimeError`` (a ``RuntimeError``) when there is no
    device or no driver; that error becomes the ``ImportError`` :func:`use` documents.
    """
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except RuntimeError as error:
        raise ImportError(
            f"{what}='cupy': CuPy is installed but no CUDA device is usable: {error}"
        ) from error
    if count < 1:
        raise ImportError(
            f"{what}='cupy': CuPy is installed but sees no CUDA device (getDeviceCount() == 0)"
        )


def _from_environment() -> types.ModuleType:
    """The module that ``KFQN_BACKEND`` names (``numpy`` when it is unset)."""
    return _module_named(os.environ.get(BACKEND_VARIABLE, "numpy"), BACKEND_VARIABLE)


_current_module: types.ModuleType = _from_environment()


def register_array_module(array_type: type, module: types.ModuleType) -> None:
    """Make :func:`xp_of` return ``module`` for arrays of ``array_type``.

    For array libraries other than NumPy and CuPy (the tests' strict backend,
    ``docs/backends.md``). Their arrays must offer ``get()`` (as CuPy's do) for :func:`to_host`.
    """
    _array_modules[array_type] = module


def xp_of(*arrays: Array) -> types.ModuleType:
    """Return the array module owning ``arrays``.

    That is ``cupy`` if any of them is a CuPy array, the registered module of a type registered
    with :func:`register_array_module`, else ``numpy``.
    """
    for array in arrays:
        if type(array) is np.ndarray:  # the common case, decided without a lookup
            continue
        if type(array) in _array_modules:
            return _array_modules[type(array)]
        if type(array).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def to_host(array: Array) -> np.ndarray:
    """Return ``array`` as a host ``numpy.ndarray`` (copying from the device when needed)."""
    if type(array) is np.ndarray:
        return array
    if xp_of(array) is not np:
        return array.get()
    return np.asarray(array)


def to_device(array: np.ndarray) -> Array:
    """``array`` (host data: a minibatch, an evaluation chunk) as an array of the current module.

    A no-op under NumPy (the same object); under CuPy one explicit host-to-device copy.
    """
    if _current_module is np:
        return array
    return _current_module.asarray(array)


def host_scalar(value: Array) -> float:
    """Return the 0-d (or one-element) array ``value`` as a Python float, on the host.

    The one named conversion the package uses where a Python number is genuinely needed (a
    branch, a log line): each use is listed in ``docs/backends.md``.
    """
    if isinstance(value, np.generic):  # a NumPy scalar (what a NumPy reduction returns)
        return float(value)
    return float(to_host(value).reshape(()))


def host_bool(value: Array) -> bool:
    """Return the 0-d boolean array ``value`` as a Python bool, on the host (a check's branch)."""
    if isinstance(value, np.generic):
        return bool(value)
    return bool(to_host(value).reshape(()))


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read all arrays of the ``.npz`` archive at ``path`` into memory, never with pickle.

    Every member must be an ``.npy`` array of a plain dtype whose header's shape and dtype account
    for exactly the member's uncompressed size in the zip directory, and that size must fit the
    archive (a deflate stream expands at most :data:`MAX_DEFLATE_RATIO`-fold): so a forged header
    allocates nothing. ``ValueError`` naming the member and what is wrong for a single ``.npy``
    array, a member that is not an ``.npy`` array, an object array, a header that disagrees with
    the directory, or a damaged archive (bad zip, bad deflate data, bad CRC); ``OSError`` if the
    file cannot be opened. The file is closed on every path.
    """
    with open(path, "rb") as file:
        if file.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
            raise ValueError("expected a .npz archive of named arrays, got a single .npy array")
        file.seek(0)
        archive_size = os.fstat(file.fileno()).st_size
        try:
            with zipfile.ZipFile(file) as archive:
                return {
                    info.filename.removesuffix(".npy"): _read_member(archive, info, archive_size)
                    for info in archive.infolist()
                }
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            kind = f"{type(error).__module__}.{type(error).__name__}"
            raise ValueError(f"not a valid .npz archive (damaged: {kind}: {error})") from None


#: The largest expansion of a deflate stream (about 1032:1), which bounds a member's true size.
MAX_DEFLATE_RATIO = 1032


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> np.ndarray:
    """One ``.npy`` member of an archive, its header checked against the zip directory first."""
    name = info.filename
    if not name.endswith(".npy"):
        raise ValueError(f"archive member {name!r} is not an .npy array")
    if info.compress_size > archive_size or info.file_size > (
        MAX_DEFLATE_RATIO * info.compress_size + 1024
    ):
        raise ValueError(
            f"archive member {name!r} claims {info.file_size} bytes from {info.compress_size} "
            f"compressed bytes in a {archive_size}-byte archive (a forged zip directory)"
        )
    with archive.open(info) as member:
        shape, dtype = _npy_header(member, name)
        claimed = math.prod(shape) * dtype.itemsize
        if member.tell() + claimed != info.file_size:
            raise ValueError(
                f"archive member {name!r}: its header claims shape {shape} of {dtype} "
                f"({claimed} bytes) but the zip directory gives it "
                f"{info.file_size - member.tell()} bytes of data"
            )
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _npy_header(member, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the header of an ``.npy`` stream (left positioned after it)."""
    version = np.lib.format.read_magic(member)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f"archive member {name!r} has .npy format version {version}")
    shape, _, dtype = readers[version](member)
    if dtype.hasobject:
        raise ValueError(
            f"archive member {name!r}: Object arrays cannot be loaded when allow_pickle=False "
            "(Python objects are never unpickled)"
        )
    return shape, dtype


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as the ``.npz`` archive ``path`` atomically, under exactly that name.

    Each value is converted with ``numpy.asarray``; a key that is not a string or a value that
    would need pickle (an object array) is a ``TypeError``, raised before anything is written.
    The archive goes to a temporary file in ``path``'s folder, is flushed to disk and renamed
    over ``path`` (``os.replace``, atomic): a failed save (``OSError``: a full disk, a missing
    folder) leaves the previous file as it was and no temporary file behind. No ``.npz`` suffix
    is added.
    """
    plain = {}
    for key, value in arrays.items():
        if not isinstance(key, str):
            raise TypeError(f"array names must be strings, got {type(key).__name__} {key!r}")
        plain[key] = np.asarray(to_host(value))
        if plain[key].dtype.hasobject:
            raise TypeError(
                f"array {key!r} has dtype object; only plain arrays are written (never pickled)"
            )
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, allow_pickle=False, **plain)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise


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
