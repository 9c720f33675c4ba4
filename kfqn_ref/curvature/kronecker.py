"""Kronecker products, column-major vec, and the nearest Kronecker product of a matrix.

Conventions (``docs/conventions.md`` §5): ``vec`` stacks the COLUMNS of a matrix, so that

    vec(G X A^T) = (A kron G) vec(X)                             (hessian-structure.md, eq. 1)

and a layer block over ``vec(W~)`` reads ``A kron G`` with ``A`` on the input side and ``G`` on the
output side. Shapes: ``A`` is ``(m1, n1)``, ``G`` is ``(m2, n2)``, ``A kron G`` is
``(m1 m2, n1 n2)`` and ``X`` is ``(n2, n1)``.

The nearest Kronecker product (Van Loan & Pitsianis 1993) rests on the rearrangement ``R``, a
linear re-indexing of the entries of ``M`` with

    R(A kron G) = vec(A) vec(G)^T,   ||R(M)||_F = ||M||_F        (hessian-structure.md, eq. 7)

so ``min ||M - A kron G||_F`` is a rank-one approximation problem for ``R(M)``, solved by its SVD.

Inputs: matrices and vectors must be arrays (NumPy, CuPy or ``autograd.numpy`` values, anything
with ``shape`` and ``ndim``); a list or other array-like is refused with a ``TypeError`` naming
the argument rather than converted silently (conversion would pick a dtype and a device for the
caller). Shapes ``shape_A``, ``shape_G`` and the ``shape`` of :func:`unvec` must be pairs of
positive ints (``ValueError`` otherwise).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import is_int
from kfqn_ref.backend import xp_of

MATRIX_NDIM = 2


def check_array(name: str, array) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``array`` has ``shape`` and ``ndim``.

    NumPy, CuPy and autograd values pass; lists, tuples and scalars do not (no silent conversion).
    """
    if not (hasattr(array, "shape") and hasattr(array, "ndim")):
        raise TypeError(
            f"{name} must be an array (numpy/cupy ndarray or autograd value), "
            f"got {type(array).__name__}; convert it with numpy.asarray first"
        )


def check_shape_pair(name: str, shape) -> tuple[int, int]:
    """Return ``shape`` as ``(rows, cols)`` of Python ints.

    Raises ``ValueError`` naming ``name`` unless ``shape`` is a pair of positive ints.
    """
    try:
        rows, cols = shape
    except (TypeError, ValueError):
        rows = cols = None
    if not all(is_int(n) and n >= 1 for n in (rows, cols)):
        raise ValueError(f"{name} must be a pair (rows, cols) of positive ints, got {shape!r}")
    return int(rows), int(cols)


def _check_matrix(name: str, array) -> None:
    check_array(name, array)
    if array.ndim != MATRIX_NDIM:
        raise ValueError(f"{name} must be a matrix (2 dimensions), got shape {tuple(array.shape)}")


def vec(X):
    """Column-major vec: stack the columns of ``X`` ``(m, n)`` into a vector ``(m n,)``.

    Entry ``X[i, j]`` lands at index ``i + j m``. Works on NumPy, CuPy and ``autograd.numpy``
    values (it only transposes and reshapes).
    """
    _check_matrix("X", X)
    return X.T.reshape(-1)


def unvec(v, shape):
    """Inverse of :func:`vec`: the ``(m, n)`` matrix whose column-major vec is ``v`` ``(m n,)``.

    Raises
    ------
    ValueError
        If ``shape`` is not a pair of positive ints or ``v`` is not a vector of length ``m n``.
    TypeError
        If ``v`` is not an array.

    """
    rows, cols = check_shape_pair("shape", shape)
    check_array("v", v)
    if v.ndim != 1 or v.shape[0] != rows * cols:
        raise ValueError(
            f"v must be a vector of length {rows * cols} to unvec into shape {tuple(shape)}, "
            f"got shape {tuple(v.shape)}"
        )
    return v.reshape(cols, rows).T


def kron(A, G):
    """Return ``A kron G``, ``(m1 m2, n1 n2)``: block ``(i, j)`` is ``A[i, j] G``."""
    _check_matrix("A", A)
    _check_matrix("G", G)
    return xp_of(A, G).kron(A, G)


def kron_matvec(A, G, X):
    """Apply ``A kron G`` to ``vec(X)`` without forming the product: return ``G @ X @ A.T``.

    By eq. 1, ``vec(G X A^T) = (A kron G) vec(X)``. Shapes: ``A`` ``(m1, n1)``, ``G`` ``(m2, n2)``,
    ``X`` ``(n2, n1)``; the result is ``(m2, m1)``. Cost ``O(m2 n2 n1 + m2 n1 m1)`` instead of
    ``O(m1 m2 n1 n2)``.

    Raises
    ------
    ValueError
        If a factor is not a matrix or ``X`` is not ``(G.shape[1], A.shape[1])``.
    TypeError
        If ``A``, ``G`` or ``X`` is not an array (e.g. a list).

    """
    _check_matrix("A", A)
    _check_matrix("G", G)
    _check_matrix("X", X)
    expected = (G.shape[1], A.shape[1])
    if tuple(X.shape) != expected:
        raise ValueError(
            f"X must have shape (G.shape[1], A.shape[1]) = {expected} to be multiplied by "
            f"A kron G with A {tuple(A.shape)} and G {tuple(G.shape)}, got {tuple(X.shape)}"
        )
    return G @ X @ A.T


def rearrange(M, shape_A, shape_G):
    """Return the Van Loan–Pitsianis rearrangement ``R(M)``, ``(m1 n1, m2 n2)`` (eq. 7).

    Row ``i + j m1`` of ``R(M)`` is ``vec(M_ij)^T``, where ``M_ij`` is the ``(m2, n2)`` block
    ``(i, j)`` of ``M`` ``(m1 m2, n1 n2)``; hence ``R(A kron G) = vec(A) vec(G)^T``. Computed by one
    reshape and one transpose: ``M[i m2 + p, j n2 + q]`` goes to ``R[i + j m1, p + q m2]``.
    """
    m1, n1 = check_shape_pair("shape_A", shape_A)
    m2, n2 = check_shape_pair("shape_G", shape_G)
    _check_matrix("M", M)
    if tuple(M.shape) != (m1 * m2, n1 * n2):
        raise ValueError(
            f"M must have shape (m1 m2, n1 n2) = {(m1 * m2, n1 * n2)} for factors of shapes "
            f"shape_A {tuple(shape_A)} and shape_G {tuple(shape_G)}, got {tuple(M.shape)}"
        )
    blocks = M.reshape(m1, m2, n1, n2)  # blocks[i, p, j, q] = M[i m2 + p, j n2 + q]
    return blocks.transpose(2, 0, 3, 1).reshape(n1 * m1, n2 * m2)


class NearestKronecker(NamedTuple):
    """Result of :func:`nearest_kronecker`.

    Attributes
    ----------
    A, G:
        The factors of the nearest Kronecker product ``A kron G`` in the Frobenius norm, scaled
        so that ``||A||_F = ||G||_F`` and the entry of ``A`` largest in magnitude is positive.
    relative_error:
        ``||M - A kron G||_F / ||M||_F = sqrt(sum_{k>1} s_k^2 / sum_k s_k^2)`` (eq. 8); 0 for
        ``M = 0``.
    kronecker_rank:
        The number of singular values of ``R(M)`` above ``rank_rtol * s_1``: the least number of
        Kronecker products whose sum is ``M`` (to that tolerance).
    singular_values:
        All singular values ``s_1 >= s_2 >= ...`` of ``R(M)``.

    """

    A: np.ndarray
    G: np.ndarray
    relative_error: float
    kronecker_rank: int
    singular_values: np.ndarray


def default_rank_rtol(shape_A, shape_G, dtype) -> float:
    """Return NumPy's ``matrix_rank`` tolerance for ``R(M)``: ``eps * max(R.shape)``."""
    (m1, n1), (m2, n2) = check_shape_pair("shape_A", shape_A), check_shape_pair("shape_G", shape_G)
    return float(np.finfo(dtype).eps) * max(m1 * n1, m2 * n2)


def nearest_kronecker(M, shape_A, shape_G, *, rank_rtol=None) -> NearestKronecker:
    """Find the Kronecker product ``A kron G`` nearest to ``M`` in the Frobenius norm.

    Van Loan & Pitsianis (1993), "Approximation with Kronecker products".

    With the SVD ``R(M) = sum_k s_k u_k v_k^T`` of the rearrangement (eq. 7), the minimiser of
    ``||M - A kron G||_F`` is ``vec(A) = sqrt(s_1) u_1``, ``vec(G) = sqrt(s_1) v_1`` (eq. 8).

    Parameters
    ----------
    M:
        ``(m1 m2, n1 n2)`` matrix.
    shape_A, shape_G:
        ``(m1, n1)`` and ``(m2, n2)``, the shapes of the factors.
    rank_rtol:
        Relative tolerance for the Kronecker rank (singular values ``> rank_rtol * s_1`` count);
        default :func:`default_rank_rtol`, NumPy's ``matrix_rank`` rule.

    Raises
    ------
    ValueError
        If ``shape_A`` or ``shape_G`` is not a pair of positive ints, or ``M`` does not have shape
        ``(m1 m2, n1 n2)``.
    TypeError
        If ``M`` is not an array.

    """
    R = rearrange(M, shape_A, shape_G)
    xp = xp_of(M)
    U, s, Vt = xp.linalg.svd(R, full_matrices=False)
    scale = xp.sqrt(s[0])
    A = unvec(scale * U[:, 0], shape_A)
    G = unvec(scale * Vt[0, :], shape_G)
    if A.reshape(-1)[xp.argmax(xp.abs(A))] < 0:
        A, G = -A, -G
    total = float(xp.sum(s**2))
    relative_error = float(xp.sqrt(xp.sum(s[1:] ** 2) / total)) if total > 0.0 else 0.0
    if rank_rtol is None:
        rank_rtol = default_rank_rtol(shape_A, shape_G, M.dtype)
    kronecker_rank = int(xp.sum(s > rank_rtol * s[0]))
    return NearestKronecker(A, G, relative_error, kronecker_rank, s)
