"""Bad input to the golden package and the layout converters: one table; messages name it."""

import re

import numpy as np
import pytest

from golden_tests.helpers import GOLDEN
from kfqn_ref import interop
from kfqn_ref.golden import check, export
from kfqn_ref.golden.format import GoldenFormatError

W = np.ones((3, 4))

ROWS = [
    (
        "linear_list",
        lambda: interop.linear_to_homogeneous([[1.0]]),
        TypeError,
        "weight must be an array",
    ),
    (
        "linear_bias_shape",
        lambda: interop.linear_to_homogeneous(W, np.ones(4)),
        ValueError,
        r"bias must have shape \(3,\)",
    ),
    (
        "linear_bias_dtype",
        lambda: interop.linear_to_homogeneous(W, np.ones(3, np.float32)),
        TypeError,
        "bias has dtype float32",
    ),
    (
        "linear_nan",
        lambda: interop.linear_to_homogeneous(np.full((2, 2), np.nan)),
        ValueError,
        "weight contains NaN",
    ),
    (
        "homogeneous_flag",
        lambda: interop.homogeneous_to_linear(W, has_bias=1),
        TypeError,
        "has_bias must be True or False",
    ),
    (
        "conv_ndim",
        lambda: interop.conv2d_to_homogeneous(W),
        ValueError,
        "weight must have 4 dimensions",
    ),
    (
        "conv_kernel_shape",
        lambda: interop.homogeneous_to_conv2d(W, (2, 2, 2)),
        ValueError,
        "kernel_shape .* needs 8",
    ),
    (
        "conv_kernel_kind",
        lambda: interop.homogeneous_to_conv2d(W, 3),
        TypeError,
        "kernel_shape must be a tuple",
    ),
    ("vec_rows", lambda: interop.vec_permutation(0, 2), ValueError, "rows must be an integer >= 1"),
    (
        "vec_cols_kind",
        lambda: interop.vec_permutation(2, 2.0),
        TypeError,
        "cols must be an integer",
    ),
    (
        "permute_length",
        lambda: interop.permute(W, np.arange(2)),
        ValueError,
        "array axis 0 has length 3",
    ),
    (
        "record_shape",
        lambda: interop.record_to_conv_output(np.ones((1, 5, 2)), 2, 2),
        ValueError,
        r"h must have shape \(any, 4, any\)",
    ),
    (
        "unfold_kind",
        lambda: interop.unfold_to_record(np.ones((1, 2, 3), dtype=int)),
        TypeError,
        "patches must have dtype float64 or float32",
    ),
    (
        "export_unknown",
        lambda: export.export("/nonexistent", ["nope"]),
        ValueError,
        r"unknown golden case\(s\) \['nope'\]",
    ),
    (
        "check_unknown_case",
        lambda: check.check(GOLDEN, GOLDEN, "nope"),
        GoldenFormatError,
        "unknown case 'nope'",
    ),
    (
        "check_no_golden",
        lambda: check.check("/nonexistent", GOLDEN),
        GoldenFormatError,
        "golden folder /nonexistent does not exist",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_bad_input_is_refused_naming_the_argument(call, error, pattern):
    before = W.copy()
    with pytest.raises(error) as raised:
        call()
    assert re.search(pattern, str(raised.value)), str(raised.value)
    assert np.array_equal(W, before)  # the converters never write into their inputs
