"""The strict backend refuses every implicit host conversion, so the other tests here mean it."""

import operator

import numpy as np
import pytest

from kfqn_ref import backend
from tests.backends import strict

A = strict.asarray(np.arange(6.0).reshape(2, 3))

REFUSED = [
    ("numpy.asarray", lambda: np.asarray(A)),
    ("numpy function", lambda: np.sum(A)),
    ("numpy ufunc", lambda: np.exp(A)),
    ("float", lambda: float(A.sum())),
    ("int", lambda: int(A[0, 0])),
    ("bool", lambda: bool(A.sum() > 0)),
    ("index", lambda: operator.index(A[0, 0].astype(np.int64))),
    ("item", lambda: A.sum().item()),
    ("tolist", lambda: A.tolist()),
    ("if", lambda: 1 if A[0, 0] > 0 else 0),
]


@pytest.mark.parametrize(("what", "call"), REFUSED, ids=[row[0] for row in REFUSED])
def test_implicit_conversions_are_refused(what, call):
    with pytest.raises(TypeError):  # ImplicitHostTransfer, or NumPy's own for a ufunc
        call()


def test_arithmetic_indexing_and_reductions_stay_strict_and_match_numpy():
    host = np.arange(6.0).reshape(2, 3)
    results = [A + 1, 2 * A, A @ A.T, A[:, 1], A.T, A.sum(axis=0), A.max(), A > 2, -A, A**2]
    expected = [host + 1, 2 * host, host @ host.T, host[:, 1], host.T, host.sum(axis=0)]
    expected += [host.max(), host > 2, -host, host**2]
    for got, want in zip(results, expected, strict=True):
        assert type(got) is strict.StrictArray
        np.testing.assert_array_equal(backend.to_host(got), want)


def test_the_backend_recognises_the_strict_module_and_converts_explicitly():
    assert backend.xp_of(A) is strict.module and strict.module is not np
    assert type(backend.to_host(A)) is np.ndarray
    assert backend.host_scalar(A.sum()) == 15.0
    assert backend.host_bool(A.sum() > 0) is True
