"""A strict array backend: behaves like CuPy where hidden host round trips matter.

:class:`StrictArray` wraps a ``numpy.ndarray`` and refuses every implicit conversion that would
copy device data to the host: ``numpy.asarray`` (``__array__``), ``float``/``int``/``bool``/
``operator.index``, ``.item()``, ``.tolist()``, and any NumPy function called on it
(``__array_function__``, ``__array_ufunc__``). Arithmetic, ``@``, indexing, comparisons and the
methods the package calls return strict arrays again (a reduction gives a 0-d one, as CuPy does).
The only way out is explicit: ``.get()``, which :func:`kfqn_ref.backend.to_host` (and so
``host_scalar`` / ``host_bool``) calls; there is no exception, the argument checks included.

:data:`module` (named ``strictnp``) is the array module, distinct from ``numpy``: the functions
kfqn_ref calls as ``xp.<name>``, each delegating to NumPy on the wrapped data.
"""

import types

import numpy as np

from kfqn_ref import backend


class ImplicitHostTransfer(TypeError):
    """A strict array was converted to the host without ``to_host``/``host_scalar``."""


def _unwrap(value):
    """``value`` with every strict array (also inside tuples, lists, dicts) replaced by its data."""
    if isinstance(value, StrictArray):
        return value.data
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(item) for item in value)
    if isinstance(value, dict):
        return {key: _unwrap(item) for key, item in value.items()}
    return value


def _wrap(value):
    """NumPy arrays and scalars in ``value`` as strict arrays (tuples of them element-wise)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return StrictArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    return value


def _delegate(function):
    """``function`` (a NumPy callable) made to take and return strict arrays."""

    def strict(*args, **kwargs):
        return _wrap(function(*_unwrap(args), **_unwrap(kwargs)))

    strict.__name__ = getattr(function, "__name__", "strict")
    return strict


def _refuse(what: str):
    """A conversion method that raises: the package must convert explicitly (``.get()``)."""

    def refuse(self, *args):
        raise ImplicitHostTransfer(f"{what} of a strict (device) array: use backend.to_host")

    return refuse


class StrictArray:
    """A NumPy array behind a wall: see the module docstring."""

    __slots__ = ("data", "__weakref__")  # weakref: the L-BFGS factor cache, as for CuPy arrays
    __array_ufunc__ = None  # NumPy binary operators defer to ours; ufuncs on us raise TypeError
    __hash__ = None

    def __init__(self, data: np.ndarray):
        self.data = data

    def __array_function__(self, func, types, args, kwargs):
        raise ImplicitHostTransfer(
            f"numpy.{func.__name__} called on a strict (device) array: use the array's module "
            "(backend.xp_of) or backend.to_host"
        )

    __array__ = _refuse("numpy.asarray")
    __float__ = _refuse("float()")
    __int__ = _refuse("int()")
    __bool__ = _refuse("bool()")
    __index__ = _refuse("operator.index()")
    __complex__ = _refuse("complex()")
    item = _refuse(".item()")
    tolist = _refuse(".tolist()")

    def get(self) -> np.ndarray:
        """The explicit copy to the host, as ``cupy.ndarray.get``."""
        return self.data.copy()

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    T = property(lambda self: StrictArray(self.data.T))

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"StrictArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key):
        return _wrap(self.data[_unwrap(key)])

    def __setitem__(self, key, value):
        self.data[_unwrap(key)] = _unwrap(value)


_OPERATORS = (
    "add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv mod pow rpow matmul rmatmul "
    "lt le gt ge eq ne and rand or ror xor neg pos abs invert"
).split()
_IN_PLACE = "iadd isub imul itruediv ipow imatmul iand ior".split()
_METHODS = (
    "reshape sum mean max min astype copy transpose ravel any all cumsum argmax diagonal trace "
    "squeeze clip dot"
).split()


def _operator(name):
    def apply(self, *args, **kwargs):
        return _wrap(getattr(self.data, name)(*_unwrap(args), **_unwrap(kwargs)))

    return apply


def _in_place(name):
    def apply(self, other):
        getattr(self.data, name)(_unwrap(other))
        return self

    return apply


for _name in _OPERATORS:
    setattr(StrictArray, f"__{_name}__", _operator(f"__{_name}__"))
for _name in _IN_PLACE:
    setattr(StrictArray, f"__{_name}__", _in_place(f"__{_name}__"))
for _name in _METHODS:
    setattr(StrictArray, _name, _operator(_name))


#: The functions kfqn_ref calls as ``xp.<name>`` (``grep -rn "xp\\.\\|module\\." kfqn_ref``).
_FUNCTIONS = (
    "abs all any arange argmax argmin asarray broadcast_to concatenate cumsum diag diagonal exp "
    "eye full_like isfinite ldexp log log1p logaddexp max maximum mean minimum ones outer pad sqrt "
    "stack sum take_along_axis tanh trace transpose triu where zeros zeros_like"
).split()
_LINALG = "norm inv eigh svd solve cholesky".split()

module = types.ModuleType("strictnp", "NumPy behind the strict array wall (tests only).")
for _name in _FUNCTIONS:
    setattr(module, _name, _delegate(getattr(np, _name)))
module.linalg = types.ModuleType("strictnp.linalg")
for _name in _LINALG:
    setattr(module.linalg, _name, _delegate(getattr(np.linalg, _name)))
module.linalg.LinAlgError = np.linalg.LinAlgError
module.errstate, module.finfo = np.errstate, np.finfo
module.nan, module.inf, module.newaxis = np.nan, np.inf, np.newaxis
module.float32, module.float64 = np.float32, np.float64
module.ndarray = StrictArray

backend.register_array_module(StrictArray, module)


def asarray(array) -> StrictArray:
    """A strict copy of a host array (what ``cupy.asarray`` does for a NumPy one)."""
    return StrictArray(np.array(array))
