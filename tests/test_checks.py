"""Every checker of kfqn_ref._checks, table-driven: what it accepts and returns, what it refuses.

The rule (docs/conventions.md, "Errors and validation"): the wrong kind -> TypeError, the right kind
with a wrong value -> ValueError, the message naming the argument (``"arg"`` in every row below).
"""

import enum
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from kfqn_ref import _checks
from kfqn_ref._checks import NonFiniteError


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Accept(NamedTuple):
    id: str
    call: Callable[[], object]
    expected: object  # compared with ==, and by type for numbers


class Refuse(NamedTuple):
    id: str
    call: Callable[[], object]
    error: type[Exception]
    pattern: str


SPD = np.array([[2.0, 1.0], [1.0, 2.0]])
ARRAY = np.ones((2, 3))
with warnings.catch_warnings():  # numpy.matrix warns that it is not recommended: the point here
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    MATRIX = np.asmatrix(SPD)

ACCEPT = [
    Accept("int-int64-max", lambda: _checks.check_int("arg", 2**63 - 1), 2**63 - 1),
    Accept("int-int64-min-magnitude", lambda: _checks.check_int("arg", -(2**63) + 1), -(2**63) + 1),
    Accept("is_int-int", lambda: _checks.is_int(3), True),
    Accept("is_int-numpy-int", lambda: _checks.is_int(np.int32(3)), True),
    Accept("is_int-bool", lambda: _checks.is_int(True), False),
    Accept("is_int-float", lambda: _checks.is_int(3.0), False),
    Accept("int-numpy-int-to-int", lambda: _checks.check_int("arg", np.int64(4), 0, 4), 4),
    Accept("int-no-bounds", lambda: _checks.check_int("arg", -7), -7),
    Accept("real-int-to-float", lambda: _checks.check_real("arg", 2), 2.0),
    Accept("real-numpy-float", lambda: _checks.check_real("arg", np.float32(0.5)), 0.5),
    Accept("positive", lambda: _checks.check_positive("arg", 1e-300), 1e-300),
    Accept("non_negative-zero", lambda: _checks.check_non_negative("arg", 0), 0.0),
    Accept(
        "interval-closed-high",
        lambda: _checks.check_in_interval("arg", 1, 0, 1, closed_high=True),
        1.0,
    ),
    Accept(
        "interval-closed-low",
        lambda: _checks.check_in_interval("arg", 0.0, 0, 1, closed_low=True),
        0.0,
    ),
    Accept("bool-numpy", lambda: _checks.check_bool("arg", np.bool_(True)), True),
    Accept("choice-member", lambda: _checks.check_choice("arg", Colour.RED, Colour), Colour.RED),
    Accept("choice-string", lambda: _checks.check_choice("arg", "green", Colour), Colour.GREEN),
    Accept(
        "int_tuple-list",
        lambda: _checks.check_int_tuple("arg", [1, np.int64(2)], 2, 1, "(h, w)"),
        (1, 2),
    ),
    Accept("int_pair-int", lambda: _checks.check_int_pair("arg", 3, 1), (3, 3)),
    Accept("int_pair-list", lambda: _checks.check_int_pair("arg", [0, 2], 0), (0, 2)),
]

SAME_OBJECT = [
    ("generator", lambda rng: _checks.check_generator("arg", rng), np.random.default_rng(0)),
    (
        "float_dtype",
        lambda a: _checks.check_float_dtype("arg", a, np.float32),
        ARRAY.astype(np.float32),
    ),
    ("float_dtype-nan-not-read", lambda a: _checks.check_float_dtype("arg", a), np.array([np.nan])),
    ("finite", lambda a: _checks.check_float_array("arg", a), ARRAY),
    ("float_array", lambda a: _checks.check_float_array("arg", a, np.float64, 2, (None, 3)), ARRAY),
    ("vector", lambda a: _checks.check_vector("arg", a, 3), np.ones(3)),
    ("square_matrix", lambda a: _checks.check_square_matrix("arg", a, 2), SPD),
    ("spd", lambda a: _checks.check_spd("arg", a), SPD),
    ("spd-empty", lambda a: _checks.check_spd("arg", a), np.zeros((0, 0))),
    ("array_like", lambda a: _checks.check_array_like("arg", a), ARRAY),
]

REFUSE = [
    # integers
    Refuse(
        "int-float",
        lambda: _checks.check_int("arg", 2.0),
        TypeError,
        r"^arg must be an integer, got float 2\.0",
    ),
    Refuse(
        "int-bool",
        lambda: _checks.check_int("arg", True),
        TypeError,
        r"^arg must be an integer, got bool True",
    ),
    Refuse(
        "int-str",
        lambda: _checks.check_int("arg", "3"),
        TypeError,
        r"^arg must be an integer, got str '3'",
    ),
    Refuse(
        "int-below",
        lambda: _checks.check_int("arg", 0, minimum=1),
        ValueError,
        r"^arg must be an integer >= 1, got 0",
    ),
    Refuse(
        "int-above",
        lambda: _checks.check_int("arg", 5, maximum=4),
        ValueError,
        r"^arg must be an integer <= 4, got 5",
    ),
    Refuse(
        "int-outside",
        lambda: _checks.check_int("arg", 5, 1, 4),
        ValueError,
        r"^arg must be an integer in \[1, 4\], got 5",
    ),
    # reals
    Refuse(
        "real-str",
        lambda: _checks.check_real("arg", "x"),
        TypeError,
        r"^arg must be a real number, got str 'x'",
    ),
    Refuse(
        "real-bool",
        lambda: _checks.check_real("arg", False),
        TypeError,
        r"^arg must be a real number, got bool",
    ),
    Refuse(
        "real-complex",
        lambda: _checks.check_real("arg", 1j),
        TypeError,
        r"^arg must be a real number, got complex",
    ),
    Refuse(
        "real-array",
        lambda: _checks.check_real("arg", np.ones(2)),
        TypeError,
        r"^arg must be a real number, got ndarray",
    ),
    Refuse(
        "real-nan",
        lambda: _checks.check_real("arg", float("nan")),
        ValueError,
        r"^arg must be finite, got nan",
    ),
    Refuse(
        "real-inf",
        lambda: _checks.check_real("arg", -np.inf),
        ValueError,
        r"^arg must be finite, got -inf",
    ),
    Refuse(
        "real-huge-int",
        lambda: _checks.check_real("arg", 10**400),
        ValueError,
        r"^arg must be a finite real number",
    ),
    Refuse(
        "positive-huge-int",
        lambda: _checks.check_positive("arg", -(10**400)),
        ValueError,
        r"^arg must be a finite real number",
    ),
    Refuse(
        "positive-zero",
        lambda: _checks.check_positive("arg", 0.0),
        ValueError,
        r"^arg must be > 0, got 0\.0",
    ),
    Refuse(
        "positive-str",
        lambda: _checks.check_positive("arg", "1"),
        TypeError,
        r"^arg must be a real number",
    ),
    Refuse(
        "non_negative-negative",
        lambda: _checks.check_non_negative("arg", -1),
        ValueError,
        r"^arg must be >= 0, got -1",
    ),
    Refuse(
        "non_negative-huge-int",
        lambda: _checks.check_non_negative("arg", 10**400),
        ValueError,
        r"^arg must be a finite real number",
    ),
    Refuse(
        "interval-open-high",
        lambda: _checks.check_in_interval("arg", 1.0, 0, 1),
        ValueError,
        r"^arg must lie in \(0, 1\), got 1\.0",
    ),
    Refuse(
        "interval-open-low",
        lambda: _checks.check_in_interval("arg", 0, 0, 1, closed_high=True),
        ValueError,
        r"^arg must lie in \(0, 1\], got 0",
    ),
    Refuse(
        "interval-str",
        lambda: _checks.check_in_interval("arg", "0.5", 0, 1),
        TypeError,
        r"^arg must be a real number",
    ),
    Refuse(
        "interval-huge-int",
        lambda: _checks.check_in_interval("arg", 10**400, 0, 1),
        ValueError,
        r"^arg must be a finite real number",
    ),
    # flags, options, generators, tuples
    Refuse(
        "bool-int",
        lambda: _checks.check_bool("arg", 1),
        TypeError,
        r"^arg must be True or False, got int 1",
    ),
    Refuse(
        "bool-str",
        lambda: _checks.check_bool("arg", "True"),
        TypeError,
        r"^arg must be True or False, got str",
    ),
    Refuse(
        "choice-unknown-string",
        lambda: _checks.check_choice("arg", "blue", Colour),
        ValueError,
        r"^arg must be one of 'red', 'green', got 'blue'",
    ),
    Refuse(
        "choice-int",
        lambda: _checks.check_choice("arg", 1, Colour),
        TypeError,
        r"^arg must be a Colour or one of the strings 'red', 'green', got int 1",
    ),
    Refuse(
        "choice-other-enum",
        lambda: _checks.check_choice("arg", Refuse, Colour),
        TypeError,
        r"^arg must be a Colour or one of the strings",
    ),
    Refuse(
        "generator-seed",
        lambda: _checks.check_generator("arg", 0),
        TypeError,
        r"^arg must be a numpy\.random\.Generator .*got int",
    ),
    Refuse(
        "generator-legacy",
        lambda: _checks.check_generator("arg", np.random.RandomState(0)),
        TypeError,
        r"^arg must be a numpy\.random\.Generator .*got RandomState",
    ),
    Refuse(
        "int_tuple-float-entry",
        lambda: _checks.check_int_tuple("arg", (1, 2.0), 2, 1, "(h, w)"),
        TypeError,
        r"^arg must be a tuple \(h, w\) of ints, got tuple \(1, 2\.0\)",
    ),
    Refuse(
        "int_tuple-an-int",
        lambda: _checks.check_int_tuple("arg", 3, 2, 1, "(h, w)"),
        TypeError,
        r"^arg must be a tuple \(h, w\) of ints, got int 3",
    ),
    Refuse(
        "int_tuple-length",
        lambda: _checks.check_int_tuple("arg", (1, 2, 3), 2, 1, "(h, w)"),
        ValueError,
        r"^arg must be a tuple \(h, w\) of 2 ints >= 1, got \(1, 2, 3\)",
    ),
    Refuse(
        "int_tuple-below",
        lambda: _checks.check_int_tuple("arg", (1, 0), 2, 1, "(h, w)"),
        ValueError,
        r"^arg must be a tuple \(h, w\) of 2 ints >= 1, got \(1, 0\)",
    ),
    Refuse(
        "int_pair-float",
        lambda: _checks.check_int_pair("arg", 1.5, 1),
        TypeError,
        r"^arg must be an int >= 1 or a pair \(h, w\) of such ints, got float 1\.5",
    ),
    Refuse(
        "int_pair-bool",
        lambda: _checks.check_int_pair("arg", True, 1),
        TypeError,
        r"^arg must be an int >= 1 or a pair .*, got bool True",
    ),
    Refuse(
        "int_pair-none",
        lambda: _checks.check_int_pair("arg", None, 1),
        TypeError,
        r"^arg must be an int >= 1 or a pair .*, got NoneType None",
    ),
    Refuse(
        "int_pair-below",
        lambda: _checks.check_int_pair("arg", 0, 1),
        ValueError,
        r"^arg must be an int >= 1 or a pair \(h, w\) of such ints, got 0$",
    ),
    Refuse(
        "int_pair-entry-below",
        lambda: _checks.check_int_pair("arg", (2, -1), 0),
        ValueError,
        r"^arg must be an int >= 0 or a pair .*, got \(2, -1\)",
    ),
    Refuse(
        "int_pair-length",
        lambda: _checks.check_int_pair("arg", (1, 1, 1), 1),
        ValueError,
        r"^arg must be an int >= 1 or a pair .*, got \(1, 1, 1\)",
    ),
    # arrays: kind and dtype (O(1))
    Refuse(
        "float_dtype-list",
        lambda: _checks.check_float_dtype("arg", [1.0]),
        TypeError,
        r"^arg must be an array of float64 or float32, got list",
    ),
    Refuse(
        "float_dtype-matrix",
        lambda: _checks.check_float_dtype("arg", MATRIX),
        TypeError,
        r"^arg must be an array of float64 or float32, got matrix of dtype float64",
    ),
    Refuse(
        "float_dtype-masked",
        lambda: _checks.check_float_dtype("arg", np.ma.masked_array(SPD)),
        TypeError,
        r"^arg must be an array of float64 or float32, got MaskedArray of dtype float64",
    ),
    Refuse(
        "float_dtype-scalar",
        lambda: _checks.check_float_dtype("arg", np.float64(1.0)),
        TypeError,
        r"^arg must be an array of float64 or float32, got float64",
    ),
    Refuse(
        "float_dtype-int64",
        lambda: _checks.check_float_dtype("arg", np.arange(3)),
        TypeError,
        r"^arg must have dtype float64 or float32, got int64",
    ),
    Refuse(
        "float_dtype-float16",
        lambda: _checks.check_float_dtype("arg", np.ones(2, np.float16)),
        TypeError,
        r"^arg must have dtype float64 or float32, got float16",
    ),
    Refuse(
        "float_dtype-mixed",
        lambda: _checks.check_float_dtype("arg", np.ones(2, np.float32), np.float64),
        TypeError,
        r"^arg has dtype float32 but float64 was expected \(mixed dtypes",
    ),
    # arrays: shape and entries
    Refuse(
        "shape-ndim",
        lambda: _checks.check_shape("arg", ARRAY, ndim=1),
        ValueError,
        r"^arg must have 1 dimensions, got shape \(2, 3\)",
    ),
    Refuse(
        "shape-axis",
        lambda: _checks.check_shape("arg", ARRAY, shape=(None, 4)),
        ValueError,
        r"^arg must have shape \(any, 4\), got \(2, 3\)",
    ),
    Refuse(
        "shape-length",
        lambda: _checks.check_shape("arg", ARRAY, shape=(2,)),
        ValueError,
        r"^arg must have shape \(2,\), got \(2, 3\)",
    ),
    Refuse(
        "finite-nan",
        lambda: _checks.check_float_array("arg", np.array([1.0, np.nan])),
        ValueError,
        r"^arg contains NaN or Inf",
    ),
    Refuse(
        "float_array-list",
        lambda: _checks.check_float_array("arg", [1.0, 2.0]),
        TypeError,
        r"^arg must be an array",
    ),
    Refuse(
        "float_array-int",
        lambda: _checks.check_float_array("arg", np.arange(3)),
        TypeError,
        r"^arg must have dtype float64 or float32",
    ),
    Refuse(
        "float_array-mixed",
        lambda: _checks.check_float_array("arg", np.ones(3, np.float32), dtype=np.float64),
        TypeError,
        r"mixed dtypes",
    ),
    Refuse(
        "float_array-ndim",
        lambda: _checks.check_float_array("arg", np.ones(3), ndim=2),
        ValueError,
        r"^arg must have 2 dimensions",
    ),
    Refuse(
        "float_array-nan",
        lambda: _checks.check_float_array("arg", np.array([1.0, np.nan])),
        ValueError,
        r"^arg contains NaN or Inf",
    ),
    Refuse(
        "float_array-inf",
        lambda: _checks.check_float_array("arg", np.array([np.inf])),
        ValueError,
        r"^arg contains NaN or Inf",
    ),
    Refuse(
        "vector-matrix",
        lambda: _checks.check_vector("arg", SPD),
        ValueError,
        r"^arg must have 1 dimensions",
    ),
    Refuse(
        "vector-length",
        lambda: _checks.check_vector("arg", np.ones(3), dim=2),
        ValueError,
        r"^arg must have shape \(2,\), got \(3,\)",
    ),
    Refuse(
        "square_matrix-shape",
        lambda: _checks.check_square_matrix("arg", ARRAY, 2),
        ValueError,
        r"^arg must have shape \(2, 2\), got \(2, 3\)",
    ),
    Refuse(
        "square_matrix-list",
        lambda: _checks.check_square_matrix("arg", SPD.tolist(), 2),
        TypeError,
        r"^arg must be an array",
    ),
    Refuse(
        "spd-asymmetric",
        lambda: _checks.check_spd("arg", np.array([[2.0, 1.0], [0.0, 2.0]])),
        ValueError,
        r"^arg must be symmetric: max\|arg - arg\^T\| = 1\.000e\+00",
    ),
    Refuse(
        "spd-indefinite",
        lambda: _checks.check_spd("arg", np.diag([1.0, -1.0])),
        ValueError,
        r"^arg must be positive definite",
    ),
    Refuse(
        "array_like-list",
        lambda: _checks.check_array_like("arg", [1.0]),
        TypeError,
        r"^arg must be an array .*got list",
    ),
    Refuse(
        "array_like-none",
        lambda: _checks.check_array_like("arg", None),
        TypeError,
        r"^arg must be an array .*got NoneType",
    ),
    Refuse(
        "array_like-matrix",
        lambda: _checks.check_array_like("arg", MATRIX),
        TypeError,
        r"^arg must be an array \(a plain numpy.ndarray, not a numpy.matrix .*got matrix",
    ),
    Refuse(
        "array_like-masked",
        lambda: _checks.check_array_like("arg", np.ma.masked_array(ARRAY)),
        TypeError,
        r"^arg must be an array \(a plain numpy.ndarray, .*got MaskedArray",
    ),
    Refuse(
        "int-beyond-64-bits",
        lambda: _checks.check_int("arg", 2**63, minimum=0),
        ValueError,
        r"^arg must be an integer of magnitude <= 2\*\*63 - 1 \(64 bits\), got one of 64 bits",
    ),
    Refuse(
        "int-beyond-64-bits-negative",
        lambda: _checks.check_int("arg", -(10**400)),
        ValueError,
        r"^arg must be an integer of magnitude <= 2\*\*63 - 1",
    ),
    Refuse(
        "int_pair-beyond-64-bits",
        lambda: _checks.check_int_pair("arg", (1, 2**64), 1),
        ValueError,
        r"^arg must be an int >= 1 or a pair \(h, w\) of such ints",
    ),
    Refuse(
        "int_tuple-beyond-64-bits",
        lambda: _checks.check_int_tuple("arg", (2**64, 1), 2, 1, "(rows, cols)"),
        ValueError,
        r"^arg must be a tuple \(rows, cols\) of 2 ints >= 1",
    ),
    Refuse(
        "real-int-beyond-a-float",
        lambda: _checks.check_positive("arg", 10**400),
        ValueError,
        r"^arg must be a finite real number",
    ),
    Refuse(
        "finite_entries-nan",
        lambda: _checks.check_finite_entries("arg", np.array([1.0, np.nan])),
        ValueError,
        r"^arg contains NaN or Inf; every entry must be finite",
    ),
    Refuse(
        "computed_finite",
        lambda: _checks.check_computed_finite("arg", np.array([np.inf, 1.0])),
        NonFiniteError,
        r"^arg is not finite \(NaN or Inf from finite inputs",
    ),
]


@pytest.mark.parametrize("row", ACCEPT, ids=[row.id for row in ACCEPT])
def test_accepts_and_returns_the_converted_value(row):
    got = row.call()
    assert got == row.expected and type(got) is type(row.expected)


@pytest.mark.parametrize(("name", "check", "value"), SAME_OBJECT, ids=[r[0] for r in SAME_OBJECT])
def test_array_checks_return_their_argument_itself(name, check, value):
    assert check(value) is value


@pytest.mark.parametrize("row", REFUSE, ids=[row.id for row in REFUSE])
def test_refuses_with_the_type_of_the_rule_and_names_the_argument(row):
    with pytest.raises(row.error) as caught:
        row.call()
    assert type(caught.value) is row.error
    assert re.search(row.pattern, str(caught.value)), f"{caught.value!s} !~ {row.pattern}"


def test_non_finite_error_is_a_value_error():
    assert issubclass(NonFiniteError, ValueError)


def test_row_ids_are_unique():
    ids = [row.id for row in ACCEPT] + [row.id for row in REFUSE] + [r[0] for r in SAME_OBJECT]
    assert len(ids) == len(set(ids))
