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
Matrices and vectors must be arrays (NumPy, CuPy or ``autograd.numpy`` values; a list is refused,
not converted); ``shape_A``, ``shape_G`` and ``shape`` are tuples ``(rows, cols)`` of positive ints.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import (
    check_array_like,
    check_finite_entries,
    check_int_tuple,
    check_non_negative,
    check_shape,
)
from kfqn_ref.backend import Array, xp_of


def vec(X: Array) -> Array:
    """Column-major vec: stack the columns of ``X`` ``(m, n)`` into a vector ``(m n,)``.

    Entry ``X[i, j]`` lands at index ``i + j m``. Works on NumPy, CuPy and ``autograd.numpy``
    values (it only transposes and reshapes).
    """
    _check_matrix("X", X)
    return vec_unchecked(X)


def vec_unchecked(X: Array) -> Array:
    """As :func:`vec`, without argument checks (for trusted callers)."""
    return X.T.reshape(-1)


def unvec(v: Array, shape: tuple[int, int]) -> Array:
    """Inverse of :func:`vec`: the ``(m, n)`` matrix whose column-major vec is ``v`` ``(m n,)``."""
    rows, cols = check_int_tuple("shape", shape, 2, 1, "(rows, cols)")
    check_array_like("v", v)
    if v.ndim != 1 or v.shape[0] != rows * cols:
        raise ValueError(
            f"v must be a vector of length {rows * cols} to unvec into shape {tuple(shape)}, "
            f"got shape {tuple(v.shape)}"
        )
    return unvec_unchecked(v, (rows, cols))


def unvec_unchecked(v: Array, shape: tuple[int, int]) -> Array:
    """As :func:`unvec`, without argument checks (for trusted callers)."""
    rows, cols = shape
    return v.reshape(cols, rows).T


def kron(A: Array, G: Array) -> Array:
    """Return ``A kron G``, ``(m1 m2, n1 n2)``: block ``(i, j)`` is ``A[i, j] G``."""
    for name, factor in (("A", A), ("G", G)):
        _check_matrix(name, factor)
    return xp_of(A, G).kron(A, G)


def kron_matvec(A: Array, G: Array, X: Array) -> Array:
    """Apply ``A kron G`` to ``vec(X)`` without forming the product: return ``G @ X @ A.T``.

    By eq. 1, ``vec(G X A^T) = (A kron G) vec(X)``. Shapes: ``A`` ``(m1, n1)``, ``G`` ``(m2, n2)``,
    ``X`` ``(n2, n1)``; the result is ``(m2, m1)``. Cost ``O(m2 n2 n1 + m2 n1 m1)`` instead of
    ``O(m1 m2 n1 n2)``.
    """
    for name, matrix in (("A", A), ("G", G), ("X", X)):
        _check_matrix(name, matrix)
    expected = (G.shape[1], A.shape[1])
    if tuple(X.shape) != expected:
        raise ValueError(
            f"X must have shape (G.shape[1], A.shape[1]) = {expected} to be multiplied by "
            f"A kron G with A {tuple(A.shape)} and G {tuple(G.shape)}, got {tuple(X.shape)}"
        )
    return G @ X @ A.T


def rearrange(M: Array, shape_A: tuple[int, int], shape_G: tuple[int, int]) -> Array:
    """Return the Van Loan–Pitsianis rearrangement ``R(M)``, ``(m1 n1, m2 n2)`` (eq. 7).

    Row ``i + j m1`` of ``R(M)`` is ``vec(M_ij)^T``, where ``M_ij`` is the ``(m2, n2)`` block
    ``(i, j)`` of ``M`` ``(m1 m2, n1 n2)``; hence ``R(A kron G) = vec(A) vec(G)^T``. Computed by one
    reshape and one transpose: ``M[i m2 + k, j n2 + l]`` goes to ``R[i + j m1, k + l m2]``.
    """
    shape_A = check_int_tuple("shape_A", shape_A, 2, 1, "(rows, cols)")
    shape_G = check_int_tuple("shape_G", shape_G, 2, 1, "(rows, cols)")
    (m1, n1), (m2, n2) = shape_A, shape_G
    _check_matrix("M", M)
    if tuple(M.shape) != (m1 * m2, n1 * n2):
        raise ValueError(
            f"M must have shape (m1 m2, n1 n2) = {(m1 * m2, n1 * n2)} for factors of shapes "
            f"shape_A {shape_A} and shape_G {shape_G}, got {tuple(M.shape)}"
        )
    blocks = M.reshape(m1, m2, n1, n2)  # blocks[i, k, j, l] = M[i m2 + k, j n2 + l]
    return blocks.transpose(2, 0, 3, 1).reshape(n1 * m1, n2 * m2)


class NearestKronecker(NamedTuple):
    """Result of :func:`nearest_kronecker`.

    ``A, G``: the factors of the nearest ``A kron G`` in the Frobenius norm, scaled so that
    ``||A||_F = ||G||_F`` and the entry of ``A`` largest in magnitude is positive.
    ``relative_error``: ``||M - A kron G||_F / ||M||_F = sqrt(sum_{k>1} s_k^2 / sum_k s_k^2)``
    (eq. 8; 0 for ``M = 0``). ``kronecker_rank``: the number of singular values of ``R(M)`` above
    ``rank_rtol * s_1``, the least number of Kronecker products whose sum is ``M`` (to that
    tolerance). ``singular_values``: all of them, ``s_1 >= s_2 >= ...``.
    """

    A: np.ndarray
    G: np.ndarray
    relative_error: float
    kronecker_rank: int
    singular_values: np.ndarray


def default_rank_rtol(shape_A: tuple[int, int], shape_G: tuple[int, int], dtype) -> float:
    """Return NumPy's ``matrix_rank`` tolerance for ``R(M)``: ``eps * max(R.shape)``."""
    return default_rank_rtol_unchecked(
        check_int_tuple("shape_A", shape_A, 2, 1, "(rows, cols)"),
        check_int_tuple("shape_G", shape_G, 2, 1, "(rows, cols)"),
        dtype,
    )


def default_rank_rtol_unchecked(shape_A: tuple[int, int], shape_G: tuple[int, int], dtype) -> float:
    """As :func:`default_rank_rtol`, without argument checks (for trusted callers)."""
    (m1, n1), (m2, n2) = shape_A, shape_G
    return float(np.finfo(dtype).eps) * max(m1 * n1, m2 * n2)


def nearest_kronecker(
    M: Array,
    shape_A: tuple[int, int],
    shape_G: tuple[int, int],
    *,
    rank_rtol: float | None = None,
) -> NearestKronecker:
    """Find the Kronecker product ``A kron G`` nearest to ``M`` in the Frobenius norm.

    Van Loan & Pitsianis (1993), "Approximation with Kronecker products".

    With the SVD ``R(M) = sum_k s_k u_k v_k^T`` of the rearrangement (eq. 7), the minimiser of
    ``||M - A kron G||_F`` is ``vec(A) = sqrt(s_1) u_1``, ``vec(G) = sqrt(s_1) v_1`` (eq. 8).

    ``M``: ``(m1 m2, n1 n2)``; ``shape_A, shape_G``: ``(m1, n1)`` and ``(m2, n2)``, the shapes of
    the factors; ``rank_rtol``: singular values ``> rank_rtol * s_1`` count towards the Kronecker
    rank (default :func:`default_rank_rtol`, NumPy's ``matrix_rank`` rule), a real ``>= 0``.
    ``ValueError`` for a NaN or Inf in ``M``.
    """
    R = rearrange(M, shape_A, shape_G)  # checks M's kind and shape, shape_A and shape_G
    check_finite_entries("M", M)
    if rank_rtol is not None:
        rank_rtol = check_non_negative("rank_rtol", rank_rtol)
    shape_A, shape_G = tuple(shape_A), tuple(shape_G)
    xp = xp_of(M)
    U, s, Vt = xp.linalg.svd(R, full_matrices=False)
    scale = xp.sqrt(s[0])
    A = unvec_unchecked(scale * U[:, 0], shape_A)
    G = unvec_unchecked(scale * Vt[0, :], shape_G)
    if A.reshape(-1)[xp.argmax(xp.abs(A))] < 0:
        A, G = -A, -G
    total = float(xp.sum(s**2))
    relative_error = float(xp.sqrt(xp.sum(s[1:] ** 2) / total)) if total > 0.0 else 0.0
    if rank_rtol is None:
        rank_rtol = default_rank_rtol_unchecked(shape_A, shape_G, M.dtype)
    kronecker_rank = int(xp.sum(s > rank_rtol * s[0]))
    return NearestKronecker(A, G, relative_error, kronecker_rank, s)


def _check_matrix(name: str, X) -> None:
    """``TypeError`` unless ``X`` is array-like, ``ValueError`` unless it has two dimensions."""
    check_shape(name, check_array_like(name, X), ndim=2)
