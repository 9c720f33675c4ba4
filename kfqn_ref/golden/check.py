"""``kfqn-ref golden check``: compare a candidate folder with the golden files, case by case.

Per case the status is PASS (every array supplied and within its tolerance), FAIL (an array is not)
or INCOMPLETE (no failure, but arrays missing; a candidate may supply only some quantities). An
array ``c`` passes against the golden ``g`` when ``max|c - g| <= atol + rtol max|g|`` with the
tolerance of its quantity from the manifest. For the first failing array in the order of
operations (step, then the manifest's ``order``, then layer) the report gives the case, step,
layer, array, the relative error ``max|c - g| / max|g|`` and the index of the worst entry, and the
diagnosis of :func:`kfqn_ref.golden.diagnose.diagnose`. Exit status: 0 when no case fails, 1 when
one does; unusable input raises :class:`~kfqn_ref.golden.format.GoldenFormatError` (status 2).
"""

from __future__ import annotations

import dataclasses
import enum
import os

import numpy as np

from kfqn_ref.golden.diagnose import diagnose
from kfqn_ref.golden.format import (
    GoldenCase,
    GoldenFormatError,
    golden_case_names,
    read_candidate,
    read_golden_case,
)

#: How many missing array names the text report lists per case (the JSON report lists all).
LISTED_MISSING = 8


class Status(str, enum.Enum):
    """The verdict on one case."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCOMPLETE = "INCOMPLETE"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One candidate array against its golden array.

    ``problem`` is set when they cannot be compared entry by entry (shape, non-finite entries);
    ``where`` is the index of the largest ``|c - g|``.
    """

    name: str
    step: int | None
    layer: int | None
    quantity: str
    passed: bool
    max_abs_error: float
    max_rel_error: float
    where: tuple[int, ...] | None
    rtol: float
    atol: float
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class CaseReport:
    """The result of one case."""

    case: str
    status: Status
    checked: int
    failed: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    first_failure: Comparison | None = None
    layer_type: str | None = None
    diagnosis: str | None = None

    def as_dict(self) -> dict:
        """Plain JSON (the ``--json`` report)."""
        result = dataclasses.asdict(self)
        result["status"] = self.status.value
        return result


@dataclasses.dataclass(frozen=True)
class Report:
    """The results of all checked cases."""

    cases: tuple[CaseReport, ...]

    @property
    def exit_status(self) -> int:
        """1 if a case failed, else 0."""
        return int(any(case.status is Status.FAIL for case in self.cases))

    def as_dict(self) -> dict:
        """Plain JSON: the exit status and every case."""
        return {"exit_status": self.exit_status, "cases": [c.as_dict() for c in self.cases]}

    def text(self) -> str:
        """The human-readable report."""
        return "\n".join(line for case in self.cases for line in _case_lines(case))


def compare(name: str, spec: dict, tolerance: dict, candidate: np.ndarray, golden: np.ndarray):
    """Compare ``candidate`` with ``golden`` under ``tolerance`` (``{"rtol", "atol"}``)."""
    rtol, atol = tolerance["rtol"], tolerance["atol"]
    base = {
        "name": name,
        "step": spec["step"],
        "layer": spec["layer"],
        "quantity": spec["quantity"],
    }
    if candidate.shape != golden.shape:
        problem = f"shape {candidate.shape}, the golden is {golden.shape}"
        return Comparison(
            **base,
            passed=False,
            max_abs_error=float("inf"),
            max_rel_error=float("inf"),
            where=None,
            rtol=rtol,
            atol=atol,
            problem=problem,
        )
    c = candidate.astype(np.float64)
    g = golden.astype(np.float64)
    if not np.all(np.isfinite(c)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(c))[0])
        return Comparison(
            **base,
            passed=False,
            max_abs_error=float("inf"),
            max_rel_error=float("inf"),
            where=where,
            rtol=rtol,
            atol=atol,
            problem="a NaN or Inf entry",
        )
    if c.size == 0:
        return Comparison(
            **base,
            passed=True,
            max_abs_error=0.0,
            max_rel_error=0.0,
            where=None,
            rtol=rtol,
            atol=atol,
        )
    difference = np.abs(c - g)
    worst = int(np.argmax(difference))
    max_abs = float(difference.reshape(-1)[worst])
    scale = float(np.max(np.abs(g)))
    relative = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Comparison(
        **base,
        passed=max_abs <= atol + rtol * scale,
        max_abs_error=max_abs,
        max_rel_error=relative,
        where=tuple(int(i) for i in np.unravel_index(worst, c.shape)),
        rtol=rtol,
        atol=atol,
    )


def order_key(name: str, spec: dict) -> tuple:
    """Where an array comes in the order of operations: step, order, layer, name."""
    step = -1 if spec["step"] is None else spec["step"]
    layer = -1 if spec["layer"] is None else spec["layer"]
    return (step, spec["order"], layer, name)


def check_case(golden: GoldenCase, candidate: dict[str, np.ndarray]) -> CaseReport:
    """Check the arrays of one candidate case against the golden case."""
    manifest = golden.manifest
    specs = manifest["arrays"]
    ordered = sorted(specs, key=lambda name: order_key(name, specs[name]))
    comparisons = [
        compare(
            name,
            specs[name],
            manifest["tolerances"][specs[name]["quantity"]],
            candidate[name],
            golden.arrays[name],
        )
        for name in ordered
        if name in candidate
    ]
    failures = [c for c in comparisons if not c.passed]
    missing = tuple(name for name in ordered if name not in candidate)
    unexpected = tuple(sorted(set(candidate) - set(specs)))
    if failures:
        status = Status.FAIL
    elif missing:
        status = Status.INCOMPLETE
    else:
        status = Status.PASS
    first = failures[0] if failures else None
    layer_type = None
    diagnosis = None
    if first is not None:
        diagnosis = diagnose(first.name, candidate, golden)
        if first.layer is not None and manifest["net"] is not None:
            layer_type = manifest["net"]["layers"][first.layer]["type"]
    return CaseReport(
        case=manifest["case"],
        status=status,
        checked=len(comparisons),
        failed=len(failures),
        missing=missing,
        unexpected=unexpected,
        first_failure=first,
        layer_type=layer_type,
        diagnosis=diagnosis,
    )


def check(
    golden_dir: str | os.PathLike, candidate_dir: str | os.PathLike, case: str | None = None
) -> Report:
    """Check every case of ``golden_dir`` (or only ``case``) against ``candidate_dir``.

    A case without a candidate file is INCOMPLETE. Raises :class:`GoldenFormatError` for an unusable
    golden or candidate file, an unknown ``case``, a missing folder, or a candidate folder that
    supplies none of the cases.
    """
    names = golden_case_names(golden_dir)
    if not os.path.isdir(candidate_dir):
        raise GoldenFormatError(f"candidate folder {candidate_dir} does not exist")
    if case is not None:
        if case not in names:
            raise GoldenFormatError(
                f"unknown case {case!r}; the golden folder holds {', '.join(names)}"
            )
        names = [case]
    reports = []
    supplied = 0
    for name in names:
        golden = read_golden_case(golden_dir, name)
        candidate = read_candidate(candidate_dir, name)
        supplied += candidate is not None
        reports.append(check_case(golden, {} if candidate is None else candidate))
    if supplied == 0:
        raise GoldenFormatError(
            f"candidate folder {candidate_dir} holds no <case>.npz of the checked case(s) "
            f"({', '.join(names)})"
        )
    return Report(tuple(reports))


def _case_lines(case: CaseReport) -> list[str]:
    counts = f"{case.checked} checked, {case.failed} failed, {len(case.missing)} missing"
    lines = [f"{case.status.value:<10} {case.case}  ({counts})"]
    first = case.first_failure
    if first is not None:
        step = "-" if first.step is None else first.step
        layer = "-" if first.layer is None else f"{first.layer} ({case.layer_type})"
        lines.append(
            f"  first failure: step {step}, layer {layer}, array {first.name} [{first.quantity}]"
        )
        if first.problem is not None:
            lines.append(f"  {first.problem}" + (f" at index {first.where}" if first.where else ""))
        else:
            lines.append(
                f"  max relative error {first.max_rel_error:.3e} at index {first.where} "
                f"(max abs error {first.max_abs_error:.3e}; "
                f"rtol {first.rtol:g}, atol {first.atol:g})"
            )
        lines.append(f"  diagnosis: {case.diagnosis or 'no known rewrite explains it'}")
    if case.missing and case.status is not Status.PASS:
        shown = ", ".join(case.missing[:LISTED_MISSING])
        more = len(case.missing) - LISTED_MISSING
        lines.append(f"  missing: {shown}" + (f" (and {more} more)" if more > 0 else ""))
    if case.unexpected:
        lines.append(f"  not in the golden case (ignored): {', '.join(case.unexpected)}")
    return lines
