"""Comparison helpers whose failures read well: which quantity, where, and by how much."""

import numpy as np


def assert_close(actual, expected, *, rtol=1e-10, atol=0.0, what="value"):
    """Assert ``|actual - expected| <= atol + rtol * max|expected|`` elementwise, with a report.

    The tolerance is relative to the largest entry of ``expected`` (a norm-wise relative test), so
    entries that are zero in exact arithmetic do not demand an absolute zero. The message names
    ``what``, the shapes, the worst entry and the relative error reached.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = np.abs(actual - expected)
    bound = atol + rtol * scale
    if expected.size and float(np.max(error)) > bound:
        worst = np.unravel_index(int(np.argmax(error)), error.shape)
        raise AssertionError(
            f"{what}: max |actual - expected| = {float(np.max(error)):.3e} at index {worst} "
            f"(actual {actual[worst]!r}, expected {expected[worst]!r}); allowed {bound:.3e} "
            f"= atol {atol:g} + rtol {rtol:g} * max|expected| {scale:.3e}"
        )
