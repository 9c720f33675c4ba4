"""Kronecker tools: vec/unvec/kron conventions, the factored matvec, the nearest Kronecker product.

Expected values come from independent routes: explicit loops over entries and blocks (the
definitions), and dense ``numpy.kron`` products.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kfqn_ref.curvature.kronecker import (
    kron,
    kron_matvec,
    nearest_kronecker,
    rearrange,
    unvec,
    vec,
)
from tests.helpers.compare import assert_close

dims = st.integers(min_value=1, max_value=4)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _vec_by_loop(X):
    """Column-major vec by its definition: entry (i, j) at index i + j m."""
    m, n = X.shape
    v = np.empty(m * n)
    for i in range(m):
        for j in range(n):
            v[i + j * m] = X[i, j]
    return v


def _rearrange_by_blocks(M, shape_A, shape_G):
    """Van Loan's R(M) by its definition: row i + j m1 is vec(block (i, j))^T."""
    (m1, n1), (m2, n2) = shape_A, shape_G
    R = np.empty((m1 * n1, m2 * n2))
    for i in range(m1):
        for j in range(n1):
            R[i + j * m1] = _vec_by_loop(M[i * m2 : (i + 1) * m2, j * n2 : (j + 1) * n2])
    return R


@given(dims, dims, seeds)
def test_vec_is_column_major_and_unvec_inverts_it(m, n, seed):
    X = np.random.default_rng(seed).standard_normal((m, n))
    assert_close(vec(X), _vec_by_loop(X), what="vec(X) vs the definition i + j m")
    assert_close(unvec(vec(X), (m, n)), X, what="unvec(vec(X))")


@given(dims, dims, dims, dims, seeds)
def test_vec_identity_and_kron_matvec_equal_the_dense_product(m1, n1, m2, n2, seed):
    """eq. 1: vec(G X A^T) = (A kron G) vec(X); expected value: the dense numpy.kron product."""
    rng = np.random.default_rng(seed)
    A, G, X = (
        rng.standard_normal((m1, n1)),
        rng.standard_normal((m2, n2)),
        rng.standard_normal((n2, n1)),
    )
    dense = np.kron(A, G) @ _vec_by_loop(X)
    assert_close(vec(kron_matvec(A, G, X)), dense, what="vec(kron_matvec(A, G, X))")
    assert_close(kron(A, G), np.kron(A, G), what="kron(A, G)")


@given(dims, dims, dims, dims, seeds)
def test_rearrangement_matches_its_block_definition(m1, n1, m2, n2, seed):
    M = np.random.default_rng(seed).standard_normal((m1 * m2, n1 * n2))
    assert_close(
        rearrange(M, (m1, n1), (m2, n2)),
        _rearrange_by_blocks(M, (m1, n1), (m2, n2)),
        what="R(M) vs block-by-block definition",
    )


@given(dims, dims, dims, dims, seeds)
def test_rearrangement_of_a_kronecker_product_is_rank_one_and_keeps_the_norm(m1, n1, m2, n2, seed):
    """eq. 7: R(A kron G) = vec(A) vec(G)^T, and R(M) holds the entries of M (so ||R(M)||_F =
    ||M||_F). Expected: the outer product of the loop-built vecs; M's sorted entries and norm."""
    rng = np.random.default_rng(seed)
    A, G = rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2))
    assert_close(
        rearrange(np.kron(A, G), (m1, n1), (m2, n2)),
        np.outer(_vec_by_loop(A), _vec_by_loop(G)),
        what="R(A kron G) vs vec(A) vec(G)^T",
    )
    M = rng.standard_normal((m1 * m2, n1 * n2))
    R = rearrange(M, (m1, n1), (m2, n2))
    assert np.array_equal(np.sort(R, axis=None), np.sort(M, axis=None))
    assert np.linalg.norm(R) == pytest.approx(np.linalg.norm(M), rel=1e-12)


@given(dims, dims, dims, dims, seeds)
def test_nearest_kronecker_recovers_an_exact_kronecker_product(m1, n1, m2, n2, seed):
    """eq. 7-8: for M = A kron G, R(M) has rank one, the error is 0 and A kron G is returned."""
    rng = np.random.default_rng(seed)
    A, G = rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2))
    M = np.kron(A, G)
    result = nearest_kronecker(M, (m1, n1), (m2, n2))
    assert_close(np.kron(result.A, result.G), M, what="nearest Kronecker product of A kron G")
    assert result.kronecker_rank == 1
    assert result.relative_error < 1e-10
    assert np.linalg.norm(result.A) == pytest.approx(np.linalg.norm(result.G), rel=1e-10)


@given(st.integers(min_value=1, max_value=3), st.integers(min_value=2, max_value=4), seeds)
def test_nearest_kronecker_of_a_sum_reports_rank_and_optimal_error(rank, size, seed):
    """A sum of r generic Kronecker products has Kronecker rank r; the error of the best single
    product equals the tail of the singular values of R(M), computed here by numpy.linalg.svd of the
    loop-built rearrangement, and no perturbed factor pair does better."""
    rng = np.random.default_rng(seed)
    m1 = n1 = m2 = n2 = size  # R(M) is size^2 x size^2 >= 4 x 4: room for Kronecker rank 3
    M = sum(
        np.kron(rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2))) for _ in range(rank)
    )
    result = nearest_kronecker(M, (m1, n1), (m2, n2))
    s = np.linalg.svd(_rearrange_by_blocks(M, (m1, n1), (m2, n2)), compute_uv=False)
    assert result.kronecker_rank == rank
    expected_error = np.sqrt(np.sum(s[1:] ** 2) / np.sum(s**2))
    assert result.relative_error == pytest.approx(expected_error, rel=1e-10, abs=1e-14)
    achieved = np.linalg.norm(M - np.kron(result.A, result.G)) / np.linalg.norm(M)
    assert achieved == pytest.approx(result.relative_error, rel=1e-10, abs=1e-12)
    perturbed = np.kron(result.A + 1e-3 * rng.standard_normal((m1, n1)), result.G)
    assert np.linalg.norm(M - perturbed) / np.linalg.norm(M) >= result.relative_error
