"""Diagnoses: which known convention difference or bug explains a failing candidate array.

Each rule rewrites the golden array (or the candidate) the way a known difference would and asks
whether the candidate then matches within the array's tolerance; the first rule that matches names
the difference. The rules use the hints of the array's manifest entry (``docs/golden.md``,
"hints"): a rule without its hint does not apply.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kfqn_ref import interop
from kfqn_ref.golden.format import GoldenCase


class Context(NamedTuple):
    """What a rule sees: the failing array (candidate ``c``, golden ``g``) and both cases."""

    c: np.ndarray
    g: np.ndarray
    hints: dict
    rtol: float
    atol: float
    candidate: dict
    golden: dict

    def close(self, x: np.ndarray, reference: np.ndarray) -> bool:
        """``x`` matches ``reference`` under the array's tolerance."""
        if x.shape != reference.shape:
            return False
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        return float(np.max(np.abs(x - reference), initial=0.0)) <= self.atol + self.rtol * scale


def _transposed(ctx: Context) -> str | None:
    if ctx.c.ndim == 2 and ctx.c.shape == ctx.g.shape[::-1] and ctx.close(ctx.c.T, ctx.g):
        return (
            "transposed: the candidate's transpose matches (a factor or matrix stored transposed)"
        )
    return None


def _row_major_vec(ctx: Context) -> str | None:
    shapes = ctx.hints.get("vec_shapes")
    if not shapes:
        return None
    blocks, offset = [], 0
    for rows, cols in shapes:
        blocks.append(interop.vec_permutation(rows, cols) + offset)
        offset += rows * cols
    perm = np.concatenate(blocks)
    axes = tuple(axis for axis, length in enumerate(ctx.g.shape) if length == offset)
    if axes and ctx.close(ctx.c, interop.permute(ctx.g, perm, axes)):
        return (
            "row- vs column-major vec: the candidate orders each layer's parameters as "
            "W~.reshape(-1) (row-major; a block then reads G kron A); the convention is the "
            "column-major vec(W~) (A kron G); convert with kfqn_ref.interop.vec_permutation"
        )
    return None


def _bias_first(ctx: Context) -> str | None:
    axes = ctx.hints.get("bias_axes")
    if not axes or ctx.c.shape != ctx.g.shape:
        return None
    moved = ctx.c
    for axis in axes:
        moved = np.roll(moved, -1, axis=axis)
    if ctx.close(moved, ctx.g):
        return (
            "bias first vs last: the candidate's homogeneous coordinate (bias column, trailing 1) "
            "comes FIRST; the convention is [W | b] with the bias last"
        )
    return None


def _preactivation_order(ctx: Context) -> str | None:
    layout = ctx.hints.get("positions_channels")
    if not layout or ctx.c.shape != ctx.g.shape:
        return None
    perm = interop.preactivation_permutation(*layout)
    if ctx.close(ctx.c, interop.permute(ctx.g, perm, (1, 2))):
        return (
            "conv pre-activation order (c, p) instead of (p, c): the candidate indexes c P + p "
            "(PyTorch's (C, H_out, W_out)); the convention is p C + c"
        )
    return None


def _pair_sign(ctx: Context) -> str | None:
    pair = ctx.hints.get("pair")
    if not pair or not ctx.close(-ctx.c, ctx.g):
        return None
    role, partner = pair["role"], pair["partner"]
    if partner not in ctx.candidate:
        return (
            f"sign flip of {role}: the candidate's {role} has the opposite sign (supply "
            f"{partner} too to tell a sign flip from new-minus-old pairs)"
        )
    if ctx.close(-ctx.candidate[partner].astype(np.float64), ctx.golden[partner]):
        return (
            "new-minus-old pairs: s and y both have the opposite sign; the convention is old "
            "minus new, s = mean(h) - mean(h+), y = mean(g) - mean(g+)"
        )
    return (
        f"sign flip of (s, y): the candidate's {role} has the opposite sign but its partner "
        f"{partner} does not, so s^T y changes sign"
    )


def _scale(ctx: Context) -> str | None:
    scales = dict(ctx.hints.get("scales", {}))
    scales.setdefault("2", 2.0)
    reduction = ctx.hints.get("position_reduction")
    for label, value in scales.items():
        for factor, extra in ((value, True), (1.0 / value, False)):
            if not ctx.close(ctx.c / factor, ctx.g):
                continue
            if label == "P" and reduction == ("mean" if extra else "sum"):
                wrong, right = ("sums", "averages") if extra else ("averages", "sums")
                return (
                    f"sum vs mean over positions: the candidate {wrong} over the P = {value:g} "
                    f"positions where the convention {right} (candidate = golden x {factor:g})"
                )
            kind = "an extra" if extra else "a missing"
            return f"{kind} factor {label} = {value:g}: candidate = golden x {factor:g}"
    return None


def _damping_split(ctx: Context) -> str | None:
    damping = ctx.hints.get("damping")
    if not damping:
        return None
    used = damping["lambda"]
    for name, alternative in damping["alternatives"].items():
        expected = ctx.g + (alternative - used) * ctx.golden[damping["s"]]
        if ctx.close(ctx.c, expected):
            return (
                f"damping split: the candidate damps with {name} = {alternative:.6g} where the "
                f"golden uses {used:.6g}"
            )
    return None


def _unchanged(ctx: Context) -> str | None:
    previous = ctx.hints.get("previous")
    if previous is None:
        return None
    before = ctx.golden[previous].astype(np.float64)
    if ctx.close(ctx.c, before) and not ctx.close(ctx.g, before):
        return (
            f"unchanged: the candidate's value equals the golden's before this step ({previous}); "
            "the update should have changed it"
        )
    return None


def _other_batch(ctx: Context) -> str | None:
    names = ctx.hints.get("other_batch")
    if not names:
        return None
    alternative = ctx.golden[names[0]] - (ctx.golden[names[1]] if len(names) > 1 else 0.0)
    if ctx.close(ctx.c, alternative):
        return (
            "second pass on another minibatch: the candidate's value is what a second pass on the "
            "NEXT minibatch gives; the second pass must reuse this step's minibatch"
        )
    return None


def _powell_sign(ctx: Context) -> str | None:
    """Powell's ``theta`` from the golden ``s, y, H``; ``theta s - (1 - theta) H y`` matches."""
    powell = ctx.hints.get("powell")
    if not powell:
        return None
    s, y = ctx.golden[powell["s"]].astype(np.float64), ctx.golden[powell["y"]].astype(np.float64)
    Hy = ctx.golden[powell["H"]].astype(np.float64) @ y
    mu1, s_dot_y, y_H_y = powell["mu1"], float(s @ y), float(y @ Hy)
    if not (y_H_y > 0.0 and s_dot_y < mu1 * y_H_y):  # Powell does not act: nothing to flip
        return None
    theta = (1.0 - mu1) * y_H_y / (y_H_y - s_dot_y)
    if ctx.close(ctx.c, theta * s - (1.0 - theta) * Hy):
        return (
            f"Powell step with the sign of H y flipped: the candidate's s is theta s - (1 - theta) "
            f"H y (theta = {theta:.6g}, s = {powell['s']}, y = {powell['y']}, H = {powell['H']}); "
            "Powell's is theta s + (1 - theta) H y, which makes s^T y = mu1 y^T H y"
        )
    return None


def _guarantee(ctx: Context) -> str | None:
    guarantee = ctx.hints.get("guarantee")
    if not guarantee or guarantee["s"] not in ctx.candidate or guarantee["y"] not in ctx.candidate:
        return None
    s = ctx.candidate[guarantee["s"]].astype(np.float64)
    y = ctx.candidate[guarantee["y"]].astype(np.float64)
    if guarantee["form"] == "s_dot_y >= c s_dot_s":
        bound, what = guarantee["c"] * float(s @ s), "c s^T s"
    else:
        bound, what = guarantee["c"] * float(y @ ctx.golden[guarantee["H"]] @ y), "c y^T H y"
    slack = 1e-12 * abs(bound)
    if float(s @ y) < bound - slack:
        return (
            f"damped pair violates its guarantee {guarantee['form']} (c = {guarantee['c']:.6g}): "
            f"the candidate's s^T y = {float(s @ y):.6e} < {what} = {bound:.6e}"
        )
    return None


#: The rules, tried in this order (the more specific first).
RULES = (
    _transposed,
    _row_major_vec,
    _bias_first,
    _preactivation_order,
    _pair_sign,
    _scale,
    _damping_split,
    _unchanged,
    _other_batch,
    _powell_sign,
    _guarantee,
)


def diagnose(name: str, candidate: dict[str, np.ndarray], golden: GoldenCase) -> str | None:
    """The first rule of :data:`RULES` that explains ``candidate[name]``, or ``None``."""
    spec = golden.manifest["arrays"][name]
    tolerance = golden.manifest["tolerances"][spec["quantity"]]
    ctx = Context(
        c=candidate[name].astype(np.float64),
        g=golden.arrays[name].astype(np.float64),
        hints=spec["hints"],
        rtol=tolerance["rtol"],
        atol=tolerance["atol"],
        candidate=candidate,
        golden=golden.arrays,
    )
    for rule in RULES:
        message = rule(ctx)
        if message is not None:
            return message
    return None
