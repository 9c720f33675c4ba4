"""The array-module and dtype policy of kfqn_ref.backend (conventions §7, §9)."""

import numpy as np
import pytest

from kfqn_ref import backend


def test_default_module_is_numpy_and_default_dtype_is_float64():
    assert backend.xp() is np
    assert backend.xp_of(np.zeros(3)) is np
    assert backend.resolve_dtype(None) == np.float64


@pytest.mark.parametrize("dtype", [np.float64, np.float32, "float32", "float64"])
def test_supported_dtypes_resolve(dtype):
    assert backend.resolve_dtype(dtype) == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, "banana"])
def test_unsupported_dtypes_are_rejected_with_the_allowed_ones_named(dtype):
    with pytest.raises(TypeError, match="float64 or float32"):
        backend.resolve_dtype(dtype)


def test_to_host_of_numpy_array_is_the_same_data():
    array = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(backend.to_host(array), array)


def test_check_float_array_accepts_a_valid_array_unchanged():
    array = np.ones((2, 3))
    assert backend.check_float_array("X", array, dtype=np.float64, ndim=2) is array


@pytest.mark.parametrize(
    ("array", "kwargs", "error", "message"),
    [
        ([1.0, 2.0], {}, TypeError, "X must be an array"),
        (np.arange(3), {}, TypeError, "X must have dtype float64 or float32"),
        (np.ones(3, np.float32), {"dtype": np.float64}, TypeError, "mixed dtypes"),
        (np.ones(3), {"ndim": 2}, ValueError, "X must have 2 dimensions"),
        (np.array([1.0, np.nan]), {}, ValueError, "X contains NaN or Inf"),
        (np.array([np.inf]), {}, ValueError, "X contains NaN or Inf"),
    ],
)
def test_check_float_array_names_the_argument_and_the_expected_form(array, kwargs, error, message):
    with pytest.raises(error, match=message):
        backend.check_float_array("X", array, **kwargs)
