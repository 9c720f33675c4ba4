"""Bad input to the curvature routines, one row per case (docs/conventions.md section 10).

Each row: an id, the call, the exception type (wrong kind -> TypeError, wrong value -> ValueError),
a pattern the message must match (it names the argument), and the arrays that must be unchanged
afterwards, compared bit for bit: the inputs of the pure Kronecker and factor routines, the model's
weights for the Hessian routines.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from kfqn_ref import nn
from kfqn_ref.curvature import hessian
from kfqn_ref.curvature.factors import (
    FisherType,
    input_factor,
    kbfgs_input_factor,
    kbfgs_minibatch_action,
    kfac_factors,
    output_factor,
)
from kfqn_ref.curvature.kronecker import kron, kron_matvec, nearest_kronecker, unvec, vec
from tests.curvature.nets import LOSSES, build_case

A2, G3, X32 = np.eye(2), np.eye(3), np.ones((3, 2))
M4 = np.eye(4)
#: Dense 3 -> Tanh -> Dense 2, N = 2: layer 1 has no parameters.
CASE = build_case([nn.Dense(3, 2), nn.Tanh(), nn.Dense(2, 2)], nn.SquaredError(), (2, 3), 0)
FORWARD = CASE.model.forward_pass(CASE.X)
RECORD = CASE.model.forward_backward(CASE.X, CASE.T).records[0]
#: Dense 3 -> Tanh -> Dense 4: its last layer's Hessians (N, 4, 4) do not fit the first record.
LATER = build_case([nn.Dense(3, 2), nn.Tanh(), nn.Dense(2, 4)], nn.SquaredError(), (2, 3), 0)
#: Conv2d(1, 2, 2) on 3x3 images: P = 4 positions, c_out = 2, so the Hessians are (N, 8, 8).
CONV = build_case(
    [nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Dense(8, 2)],
    nn.SquaredError(),
    (2, 1, 3, 3),
    0,
)
CONV_RECORD = CONV.model.forward_pass(CONV.X).records[0]
#: Explicit matrices above MAX_EXPLICIT_PARAMETERS: a square layer and a very wide one.
SIDE = int(np.sqrt(hessian.MAX_EXPLICIT_PARAMETERS)) + 1
BIG = build_case([nn.Dense(SIDE, SIDE)], nn.SquaredError(), (1, SIDE), 0)
WIDE = build_case(
    [nn.Dense(1, hessian.MAX_EXPLICIT_PARAMETERS + 1, bias=False)], nn.SquaredError(), (1, 1), 0
)
ARRAYS = (A2, G3, X32, M4, CASE.X, CASE.T, RECORD.a, RECORD.h, CONV_RECORD.a, CONV_RECORD.h)


def inputs() -> tuple:
    """The arrays every row's call may receive."""
    return ARRAYS


def with_weights(*cases) -> Callable[[], tuple]:
    """``inputs``, the cases' ``X`` and ``T``, and their models' weights (read when called)."""
    return lambda: (
        ARRAYS + tuple(array for case in cases for array in (case.X, case.T, *case.model.weights()))
    )


class Row(NamedTuple):
    id: str
    call: Callable
    error: type
    match: str
    #: Returns the arrays that must be the same, bit for bit, after the refused call.
    unchanged: Callable[[], tuple] = inputs


BAD_SHAPES = [((2,), ValueError), ((2, 2, 1), ValueError), ((0, 2), ValueError)]
BAD_SHAPES += [((2, -1), ValueError), ((2.0, 2), TypeError), ((True, 2), TypeError)]
BAD_SHAPES += [(4, TypeError), ("ab", TypeError)]
SHAPE_MESSAGE = {
    ValueError: r"must be a tuple \(rows, cols\) of 2 ints >= 1",
    TypeError: r"must be a tuple \(rows, cols\) of ints",
}
HESSIAN_ROUTINES = (
    hessian.full_hessian,
    hessian.full_ggn,
    hessian.layer_hessian,
    hessian.layer_ggn,
)
LAYER_ROUTINES = (
    hessian.layer_hessian,
    hessian.layer_ggn,
    hessian.preactivation_hessians,
    hessian.preactivation_ggns,
)


def target_rows():
    """Wrong targets and inputs, refused by the model's own validation for every routine."""
    for loss in LOSSES:
        case = build_case([nn.Dense(3, 2), nn.Tanh(), nn.Dense(2, 4)], loss(), (3, 3), 0)
        for function in HESSIAN_ROUTINES:
            args = (0,) if function in (hessian.layer_hessian, hessian.layer_ggn) else ()
            name = f"{function.__name__}-{loss.__name__}"
            kept = with_weights(case)
            for n in (1, 2):
                yield Row(
                    f"{name}-T[:{n}]",
                    lambda f=function, c=case, a=args, n=n: f(c.model, c.X, c.T[:n], *a),
                    ValueError,
                    r"targets t must have (the )?shape",
                    kept,
                )
            if loss is not nn.SoftmaxCrossEntropy:
                yield Row(
                    f"{name}-T-outputs",
                    lambda f=function, c=case, a=args: f(c.model, c.X, c.T[:, :2], *a),
                    ValueError,
                    r"targets t must have the shape of the output z",
                    kept,
                )
            yield Row(
                f"{name}-X-width",
                lambda f=function, c=case, a=args: f(c.model, c.X[:, :2], c.T, *a),
                ValueError,
                r"expected input of shape \(N, 3\), got \(3, 2\)",
                kept,
            )


ROWS = [
    # --- kronecker: matrices, shapes, arrays only ---
    Row(
        "kron_matvec-X-shape",
        lambda: kron_matvec(A2, G3, np.ones((2, 3))),
        ValueError,
        r"X must have shape \(G.shape\[1\], A.shape\[1\]\)",
    ),
    Row(
        "kron_matvec-A-vector",
        lambda: kron_matvec(np.ones(2), G3, X32),
        ValueError,
        r"A must have 2 dimensions, got shape \(2,\)",
    ),
    Row("kron-G-vector", lambda: kron(A2, np.ones(3)), ValueError, "G must have 2 dimensions"),
    Row("vec-X-vector", lambda: vec(np.ones(3)), ValueError, "X must have 2 dimensions"),
    Row(
        "nearest-M-shape",
        lambda: nearest_kronecker(np.ones((6, 5)), (2, 2), (3, 3)),
        ValueError,
        "M must have shape",
    ),
    Row("unvec-v-length", lambda: unvec(np.ones(5), (2, 3)), ValueError, "length 6"),
    *(
        Row(f"{name}-{bad!r}", call, error, f"^{argument} {SHAPE_MESSAGE[error]}")
        for bad, error in BAD_SHAPES
        for name, argument, call in (
            ("nearest-shape_A", "shape_A", lambda b=bad: nearest_kronecker(M4, b, (2, 2))),
            ("nearest-shape_G", "shape_G", lambda b=bad: nearest_kronecker(M4, (2, 2), b)),
            ("unvec-shape", "shape", lambda b=bad: unvec(np.ones(4), b)),
        )
    ),
    Row(
        "kron_matvec-A-list",
        lambda: kron_matvec(A2.tolist(), G3, X32),
        TypeError,
        "^A must be an array .* got list",
    ),
    Row(
        "kron_matvec-G-list",
        lambda: kron_matvec(A2, [[1.0]], X32),
        TypeError,
        "^G must be an array .* got list",
    ),
    Row(
        "kron_matvec-X-list",
        lambda: kron_matvec(A2, G3, X32.tolist()),
        TypeError,
        "^X must be an array .* got list",
    ),
    Row(
        "nearest-M-list",
        lambda: nearest_kronecker(M4.tolist(), (2, 2), (2, 2)),
        TypeError,
        "^M must be an array",
    ),
    Row("unvec-v-list", lambda: unvec([1.0, 2.0], (1, 2)), TypeError, "^v must be an array"),
    # --- factors: records, the minibatch action, Fisher types ---
    Row(
        "input_factor-a-1d",
        lambda: input_factor(np.ones(3)),
        ValueError,
        r"a must be a dense record \(N, d\) or a conv record \(N, P, d\)",
    ),
    Row(
        "output_factor-g-4d",
        lambda: output_factor(np.ones((1, 2, 3, 4))),
        ValueError,
        r"g must be a dense record",
    ),
    Row(
        "minibatch-s-length",
        lambda: kbfgs_minibatch_action(np.ones((2, 4)), np.ones(3)),
        ValueError,
        r"s must be a vector of length D\+1 = 4",
    ),
    Row(
        "input_factor-no-sample",
        lambda: input_factor(np.zeros((0, 3))),
        ValueError,
        r"a must hold at least one sample .* got shape \(0, 3\)",
    ),
    Row(
        "output_factor-no-sample",
        lambda: output_factor(np.zeros((0, 4, 2))),
        ValueError,
        r"g must hold at least one sample .* \(0, 4, 2\)",
    ),
    Row(
        "minibatch-no-sample",
        lambda: kbfgs_minibatch_action(np.zeros((0, 3)), np.ones(3)),
        ValueError,
        r"a must hold at least one sample",
    ),
    Row(
        "kbfgs_input_factor-no-sample",
        lambda: kbfgs_input_factor(np.zeros((0, 3))),
        ValueError,
        r"a must hold at least one sample",
    ),
    Row(
        "input_factor-list",
        lambda: input_factor([[1.0, 2.0]]),
        TypeError,
        "a must be an array .* got list",
    ),
    Row(
        "output_factor-list",
        lambda: output_factor([[1.0, 2.0]]),
        TypeError,
        "g must be an array .* got list",
    ),
    Row(
        "minibatch-a-list",
        lambda: kbfgs_minibatch_action([[1.0, 2.0]], np.ones(2)),
        TypeError,
        "a must be an array .* got list",
    ),
    Row(
        "minibatch-s-list",
        lambda: kbfgs_minibatch_action(np.ones((1, 2)), [1.0, 2.0]),
        TypeError,
        "s must be an array .* got list",
    ),
    Row(
        "kfac-fisher-unknown",
        lambda: kfac_factors(CASE.model, FORWARD, CASE.T, "fisher"),
        ValueError,
        r"fisher must be one of 'empirical', 'monte_carlo', 'type2', got 'fisher'",
        with_weights(CASE),
    ),
    Row(
        "kfac-fisher-int",
        lambda: kfac_factors(CASE.model, FORWARD, CASE.T, 2),
        TypeError,
        r"fisher must be a FisherType or one of the strings",
        with_weights(CASE),
    ),
    *(
        Row(
            f"kfac-monte-carlo-rng={rng!r}",
            lambda r=rng: kfac_factors(CASE.model, FORWARD, CASE.T, FisherType.MONTE_CARLO, rng=r),
            TypeError,
            "rng must be a numpy.random.Generator",
            with_weights(CASE),
        )
        for rng in (None, 1.5, True)
    ),
    # --- hessian: layer indices (into model.layers), size limits, structure-block shapes ---
    *(
        Row(
            f"layer_hessian-layer={layer!r}",
            lambda v=layer: hessian.layer_hessian(*CASE, v),
            error,
            match,
            with_weights(CASE),
        )
        for layer, error, match in (
            (-1, ValueError, r"layer must be an integer in \[0, 2\], got -1"),
            (3, ValueError, r"layer must be an integer in \[0, 2\], got 3"),
            (1.0, TypeError, "layer must be an integer, got float"),
            (True, TypeError, "layer must be an integer, got bool"),
            ("0", TypeError, "layer must be an integer, got str"),
        )
    ),
    *(
        Row(
            f"{function.__name__}-not-trainable",
            lambda f=function: f(*CASE, 1),
            ValueError,
            r"layer 1 \(Tanh\) has no parameters",
            with_weights(CASE),
        )
        for function in LAYER_ROUTINES
    ),
    *(
        Row(
            f"{function.__name__}-too-large",
            lambda f=function: f(*BIG),
            ValueError,
            "above MAX_EXPLICIT_PARAMETERS .* Hessian-vector",
            with_weights(BIG),
        )
        for function in (hessian.full_hessian, hessian.full_ggn)
    ),
    *(
        Row(
            f"{function.__name__}-block-too-large",
            lambda f=function: f(*BIG, 0),
            ValueError,
            "above MAX_EXPLICIT_PARAMETERS",
            with_weights(BIG),
        )
        for function in (hessian.layer_hessian, hessian.layer_ggn)
    ),
    Row(
        "preactivation_hessians-too-wide",
        lambda: hessian.preactivation_hessians(*WIDE, 0),
        ValueError,
        "pre-activation Hessian of layer 0 .* above MAX_EXPLICIT",
        with_weights(WIDE),
    ),
    *(
        Row(
            f"structure_block-hessians-{shape}",
            lambda shape=shape: hessian.structure_block(RECORD, np.zeros(shape)),
            ValueError,
            r"preactivation_hessians must have shape \(N, P c_out",
        )
        for shape in ((3, 2, 2), (2, 2, 3), (2, 4))
    ),
    Row(
        "structure_block-hessians-list",
        lambda: hessian.structure_block(RECORD, [[[1.0]]]),
        TypeError,
        "preactivation_hessians must be an array",
    ),
    Row(
        "structure_block-hessians-of-a-later-layer",
        lambda: hessian.structure_block(
            LATER.model.forward_pass(LATER.X).records[0], hessian.preactivation_hessians(*LATER, 2)
        ),
        ValueError,
        r"shape \(N, P c_out, P c_out\) = \(2, 2, 2\) for record.a \(2, 4\) and record.h "
        r"\(2, 2\) .* got \(2, 4, 4\)",
        with_weights(LATER),
    ),
    Row(
        "structure_block-conv-twice-the-channels",
        lambda: hessian.structure_block(CONV_RECORD, np.zeros((2, 16, 16))),
        ValueError,
        r"= \(2, 8, 8\) for record.a .* got \(2, 16, 16\)",
    ),
    Row(
        "structure_block-record-h-samples",
        lambda: hessian.structure_block(
            dataclasses.replace(CONV_RECORD, h=CONV_RECORD.h[:1]), np.zeros((2, 8, 8))
        ),
        ValueError,
        r"record.h \(1, 4, 2\) and record.a \(2, 4, 5\)",
    ),
    *target_rows(),
    # -- NaN and Inf, numpy.matrix and masked arrays, records of the wrong kind -------------------
    *(
        Row(
            f"nearest_kronecker-M-{name}",
            lambda value=value: nearest_kronecker(np.full((4, 4), value), (2, 2), (2, 2)),
            ValueError,
            "M contains NaN or Inf; every entry must be finite",
        )
        for name, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf))
    ),
    *(
        Row(
            f"nearest_kronecker-rank_rtol-{value!r}",
            lambda value=value: nearest_kronecker(M4, (2, 2), (2, 2), rank_rtol=value),
            error,
            pattern,
        )
        for value, error, pattern in (
            (-1e-3, ValueError, "rank_rtol must be >= 0, got -0.001"),
            (float("nan"), ValueError, "rank_rtol must be finite, got nan"),
            (float("inf"), ValueError, "rank_rtol must be finite, got inf"),
            ("1e-3", TypeError, "rank_rtol must be a real number, got str"),
            (10**400, ValueError, "rank_rtol must be a finite real number"),
        )
    ),
    *(
        Row(
            f"{name}-matrix",
            call,
            TypeError,
            r"must be an array \(a plain numpy.ndarray, not a numpy.matrix or a masked array\)",
        )
        for name, call in (
            ("vec-X", lambda: vec(np.asmatrix(X32))),
            ("kron-A", lambda: kron(np.asmatrix(A2), G3)),
            ("kron_matvec-X", lambda: kron_matvec(A2, G3, np.ma.masked_array(X32))),
            ("nearest_kronecker-M", lambda: nearest_kronecker(np.asmatrix(M4), (2, 2), (2, 2))),
            ("input_factor-a", lambda: input_factor(np.ma.masked_array(RECORD.a))),
            ("output_factor-g", lambda: output_factor(np.asmatrix(RECORD.h))),
        )
    ),
    *(
        Row(
            f"structure_block-record-{name}",
            lambda record=record: hessian.structure_block(record, np.zeros((2, 2, 2))),
            TypeError,
            f"record must be a LayerRecord, got {name}",
        )
        for name, record in (("NoneType", None), ("list", [RECORD.a, RECORD.h]))
    ),
    Row(
        "structure_block-record-a-nan",
        lambda: hessian.structure_block(
            dataclasses.replace(RECORD, a=np.full_like(RECORD.a, np.nan)), np.zeros((2, 2, 2))
        ),
        ValueError,
        "record.a contains NaN or Inf",
    ),
    Row(
        "structure_block-hessians-nan",
        lambda: hessian.structure_block(RECORD, np.full((2, 2, 2), np.nan)),
        ValueError,
        "preactivation_hessians contains NaN or Inf",
    ),
]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_refused(row):
    before = [array.copy() for array in row.unchanged()]
    with pytest.raises(row.error, match=row.match):
        row.call()
    for old, new in zip(before, row.unchanged(), strict=True):
        np.testing.assert_array_equal(new, old, strict=True)


def test_row_ids_are_unique():
    assert len({row.id for row in ROWS}) == len(ROWS)


def test_the_fixtures_have_the_shapes_the_rows_rely_on():
    """The conv record has P = 4 positions and c_out = 2 (Hessian side 8); the later layer's
    Hessians are (N, 4, 4) for a first record of d_out 2."""
    assert CONV_RECORD.h.shape == (2, 4, 2)
    assert hessian.preactivation_hessians(*LATER, 2).shape == (2, 4, 4)
