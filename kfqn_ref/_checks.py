"""Every argument check of the package, under one rule (``docs/conventions.md``, section 10).

* the wrong **kind** of argument (a string where a number is expected, a list where an array is,
  a float where an integer is, ``True`` as a size) raises ``TypeError``;
* the right kind with a wrong **value** (out of range, wrong shape, NaN or Inf) raises
  ``ValueError``;
* a **computation** on valid inputs that overflows raises :class:`NonFiniteError` (a
  ``ValueError``), and an optimizer step that raises it changes nothing.

Every message names the argument, the expected form and what was received. A value checker
returns the validated value (as a Python ``int``/``float``, an enum member, or the array
unchanged), so a public function reads ``lr = check_positive("lr", lr)`` and then computes; the
operator checkers return the operator, wrapped where its values are checked as they are produced.
:func:`check_shape`, :func:`check_computed_finite`, :func:`check_curvature_pair`,
:func:`check_finite_entries` and :func:`check_host_array` only raise (they return ``None``).

Where checks live (a public ``foo`` checks once, at the edge; its core ``foo_unchecked`` only
computes): ``docs/architecture.md``, "Validation".
"""

from __future__ import annotations

import enum
import math
import numbers
from typing import TypeVar

import numpy as np

from kfqn_ref.backend import SUPPORTED_DTYPES, host_bool, host_scalar, xp_of

E = TypeVar("E", bound=enum.Enum)

#: The largest integer :func:`check_int` accepts (in magnitude): that of ``int64``.
INT64_MAX = 2**63 - 1


class NonFiniteError(ValueError):
    """A computation on finite inputs (a forward pass, a loss, a gradient, new weights) overflowed.

    An optimizer step that raises it is refused and changes nothing.
    """


def describe(value) -> str:
    """``'ndarray of dtype float32'``, ``'list'``, ...: how a message names what it received."""
    dtype = getattr(value, "dtype", None)
    name = type(value).__name__
    return f"{name} of dtype {dtype}" if dtype is not None else name


# --- Numbers, flags and options ---


def is_int(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer but not a ``bool`` (``True`` is no size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` in ``[minimum, maximum]`` (either bound may be absent).

    ``2.0`` and ``True`` are not integers (``TypeError``); one beyond 64 bits is a wrong value.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {describe(value)} {value!r}")
    if abs(value) > INT64_MAX:  # no size, count or seed is larger, and floats would overflow
        raise ValueError(
            f"{name} must be an integer of magnitude <= 2**63 - 1 (64 bits), "
            f"got one of {abs(value).bit_length()} bits"
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            expected = f">= {minimum}"
        elif minimum is None:
            expected = f"<= {maximum}"
        else:
            expected = f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {expected}, got {value}")
    return int(value)


def check_real(name: str, value) -> float:
    """Return ``value``, a real number but not a bool, as a finite ``float``.

    NaN, Inf and an integer too large for a float are wrong values (``ValueError``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float after checking ``0 < value < inf``."""
    number = check_real(name, value)
    if number <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def check_non_negative(name: str, value) -> float:
    """Return ``value`` as a float after checking ``0 <= value < inf``."""
    number = check_real(name, value)
    if number < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def check_in_interval(
    name: str,
    value,
    low: float,
    high: float,
    *,
    closed_low: bool = False,
    closed_high: bool = False,
) -> float:
    """Return ``value`` as a float in the interval ``low .. high``, open unless ``closed_*``."""
    number = check_real(name, value)
    above = number >= low if closed_low else number > low
    below = number <= high if closed_high else number < high
    if not (above and below):
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return number


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (a NumPy bool too); else ``TypeError``."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {describe(value)} {value!r}")
    return bool(value)


def check_choice(name: str, value, choices: type[E]) -> E:
    """Return the member of the enum ``choices`` that ``value`` names: itself or its value string.

    ``"2020"`` names ``KBFGSVariant.AUTHORS_2020``, so a configuration written to JSON can be fed
    back; an unknown string raises ``ValueError`` listing the valid ones.
    """
    if isinstance(value, choices):
        return value
    valid = ", ".join(repr(member.value) for member in choices)
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a {choices.__name__} or one of the strings {valid}, "
            f"got {describe(value)} {value!r}"
        )
    for member in choices:
        if member.value == value:
            return member
    raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def check_generator(name: str, rng) -> np.random.Generator:
    """Return ``rng`` if it is a ``numpy.random.Generator``; else ``TypeError``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name} must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
            f"got {describe(rng)}"
        )
    return rng


def check_instance(name: str, value, cls: type):
    """Return ``value`` if it is an instance of ``cls``; else ``TypeError`` naming both."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {describe(value)}")
    return value


def check_int_tuple(name: str, value, length: int, minimum: int, form: str) -> tuple[int, ...]:
    """Return ``value``, a tuple or list of ``length`` ints ``>= minimum``, as a tuple.

    ``form`` names the axes in the message, e.g. ``"(rows, cols)"``.
    """
    if not isinstance(value, tuple | list) or not all(is_int(v) for v in value):
        raise TypeError(f"{name} must be a tuple {form} of ints, got {describe(value)} {value!r}")
    if len(value) != length or any(v < minimum or v > INT64_MAX for v in value):
        raise ValueError(
            f"{name} must be a tuple {form} of {length} ints >= {minimum}, got {value!r}"
        )
    return tuple(int(v) for v in value)


def check_int_pair(name: str, value, minimum: int) -> tuple[int, int]:
    """Return ``value``, an int or a pair ``(h, w)`` of ints, each ``>= minimum``, as a pair."""
    pair = (value, value) if is_int(value) else value
    form = f"an int >= {minimum} or a pair (h, w) of such ints"
    if not isinstance(pair, tuple | list) or not all(is_int(v) for v in pair):
        raise TypeError(f"{name} must be {form}, got {describe(value)} {value!r}")
    if len(pair) != 2 or any(v < minimum or v > INT64_MAX for v in pair):
        raise ValueError(f"{name} must be {form}, got {value!r}")
    return int(pair[0]), int(pair[1])


# --- Arrays ---


def check_float_dtype(name: str, array, dtype=None):
    """Return ``array`` after O(1) checks (no entry read): a float64/float32 plain ndarray.

    Not ``numpy.matrix`` or a masked array, whose operators mean other things; of exactly
    ``dtype`` when given (nothing is cast silently). Every failure is a ``TypeError``.
    """
    module = xp_of(array)
    if type(array) is not module.ndarray:
        raise TypeError(f"{name} must be an array of float64 or float32, got {describe(array)}")
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must have dtype float64 or float32, got {array.dtype}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} has dtype {array.dtype} but {np.dtype(dtype)} was expected "
            "(mixed dtypes are not cast silently; convert with .astype first)"
        )
    return array


def check_float_array(name: str, array, dtype=None, ndim: int | None = None, shape=None):
    """Return an input array unchanged after checking kind, dtype, shape and finiteness.

    :func:`check_float_dtype`, :func:`check_shape`, then every entry finite (the one O(n) scan).
    """
    check_float_dtype(name, array, dtype)
    check_shape(name, array, ndim=ndim, shape=shape)
    check_finite_entries(name, array)
    return array


def check_shape(name: str, array, ndim: int | None = None, shape=None) -> None:
    """``ValueError`` unless ``array`` has ``ndim`` dimensions and ``shape`` (``None``: any)."""
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(array.shape)}")
    if shape is not None:
        fits = len(shape) == array.ndim and all(
            want is None or want == got for want, got in zip(shape, array.shape, strict=False)
        )
        if not fits:
            entries = ["any" if n is None else str(n) for n in shape]
            expected = f"({', '.join(entries)}{',' if len(entries) == 1 else ''})"  # (3,) as Python
            raise ValueError(f"{name} must have shape {expected}, got {tuple(array.shape)}")


def check_vector(name: str, v, dim: int | None = None, dtype=None):
    """Return ``v`` after checking it is a finite float vector (of length ``dim`` if given)."""
    return check_float_array(name, v, dtype=dtype, ndim=1, shape=None if dim is None else (dim,))


def check_square_matrix(name: str, A, dim: int, dtype=None):
    """Return ``A`` after checking it is a finite float ``(dim, dim)`` matrix."""
    return check_float_array(name, A, dtype=dtype, ndim=2, shape=(dim, dim))


def check_spd(name: str, A):
    """Return ``A`` after checking it is symmetric positive definite (``ValueError`` if not).

    Symmetry is required to ``max|A - A^T| <= sqrt(eps) max|A|`` (``eps`` of the dtype), which
    admits matrices from an explicit inverse; positive definiteness is a Cholesky factorisation.
    """
    xp = xp_of(A)
    if A.shape[0] == 0:
        return A
    scale = host_scalar(xp.max(xp.abs(A)))
    asymmetry = host_scalar(xp.max(xp.abs(A - A.T)))
    tolerance = math.sqrt(float(xp.finfo(A.dtype).eps)) * scale
    if asymmetry > tolerance:
        raise ValueError(
            f"{name} must be symmetric: max|{name} - {name}^T| = {asymmetry:.3e} exceeds "
            f"{tolerance:.3e} (sqrt(eps) * max|{name}|)"
        )
    try:
        xp.linalg.cholesky(A)
    except xp.linalg.LinAlgError as error:
        raise ValueError(
            f"{name} must be positive definite (its Cholesky factorisation failed)"
        ) from error
    return A


def check_array_like(name: str, array):
    """Return ``array`` if it has ``shape`` and ``ndim`` (NumPy, CuPy or an autograd value).

    Lists, tuples, scalars and ``None`` are not converted silently, and ``numpy.matrix`` and
    masked arrays, whose operators mean other things, are refused (``TypeError``).
    """
    if isinstance(array, np.ndarray) and type(array) is not np.ndarray:
        raise TypeError(
            f"{name} must be an array (a plain numpy.ndarray, not a numpy.matrix or a masked "
            f"array), got {describe(array)}; convert it with numpy.asarray first"
        )
    if not (hasattr(array, "shape") and hasattr(array, "ndim")):
        raise TypeError(
            f"{name} must be an array (numpy/cupy ndarray or autograd value), "
            f"got {describe(array)}; convert it with numpy.asarray first"
        )
    return array


def check_computed_finite(name: str, array) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if a computed ``array`` holds NaN or Inf."""
    module = xp_of(array)
    if not host_bool(module.isfinite(array).all()):
        raise NonFiniteError(
            f"{name} is not finite (NaN or Inf from finite inputs: the computation overflowed)"
        )


def check_curvature_pair(s, y, dim: int | None = None, dtype=None) -> None:
    """Check that ``s`` and ``y`` are finite float vectors of one length and one dtype.

    Of length ``dim`` and dtype ``dtype`` when given (e.g. those of an L-BFGS store).
    """
    check_vector("s", s, dim=dim, dtype=dtype)
    check_vector("y", y, dim=s.shape[0], dtype=s.dtype)


def check_finite_entries(name: str, array) -> None:
    """``ValueError`` naming ``name`` if an input ``array`` (any numeric dtype) has NaN or Inf."""
    module = xp_of(array)
    if not host_bool(module.isfinite(array).all()):
        raise ValueError(f"{name} contains NaN or Inf; every entry must be finite")


def check_host_array(name: str, array, what: str) -> None:
    """``TypeError`` naming ``name`` unless ``array`` is a host array (``what`` runs on NumPy)."""
    module = xp_of(array)
    if module is not np:
        raise TypeError(
            f"{name} must be a host (NumPy) array: {what} differentiates with autograd, which "
            f"runs on the CPU only; got a {module.__name__} array (copy it with "
            "kfqn_ref.backend.to_host, see docs/backends.md)"
        )


# --- Operators ---


def finite_valued(name: str, operator):
    """``u -> operator(u)``, raising :class:`NonFiniteError` naming ``name`` on a non-finite value.

    For a computed operator handed to a trusted core (a curvature action ``u -> M u``): its value
    is checked once, where it is produced.
    """

    def apply(u):
        value = operator(u)
        check_computed_finite(name, value)
        return value

    return apply


def check_spd_operator(name: str, A, dim: int, dtype):
    """Return ``A`` checked as an SPD ``(dim, dim)`` matrix, or a callable ``u -> A u`` wrapped.

    The wrapper checks each result as a finite vector of length ``dim`` and dtype ``dtype``
    (``"{name} applied to a vector"``); a callable's positive definiteness cannot be checked.
    """
    if not callable(A):
        return check_spd(name, check_square_matrix(name, A, dim, dtype=dtype))

    def apply(u):
        return check_vector(f"{name} applied to a vector", A(u), dim=dim, dtype=dtype)

    return apply
