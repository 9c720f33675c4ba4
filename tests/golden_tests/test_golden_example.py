"""The pure-NumPy example writes a candidate without kfqn_ref, and the checker passes it."""

import subprocess
import sys
from pathlib import Path

from golden_tests.helpers import GOLDEN
from kfqn_ref.golden import check

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "numpy_candidate.py"


def test_the_numpy_example_passes_without_importing_kfqn_ref(tmp_path):
    candidate = tmp_path / "candidate"
    # -I: isolated mode, no PYTHONPATH and no script directory on sys.path, so kfqn_ref
    # (which is not installed) cannot be imported even by accident; run from an empty folder.
    subprocess.run(
        [sys.executable, "-I", str(EXAMPLE), str(GOLDEN), str(candidate)], cwd=tmp_path, check=True
    )
    report = check.check(GOLDEN, candidate)
    by_case = {case.case: case for case in report.cases}
    assert report.exit_status == 0
    records, updates = by_case["dense_records"], by_case["bfgs_updates"]
    assert (
        records.status is check.Status.INCOMPLETE
    )  # it writes the computed arrays, not the inputs
    assert records.checked == 10 and set(records.missing) == {
        "X",
        "T",
        "layer0.weights",
        "layer2.weights",
    }
    assert (
        updates.status is check.Status.INCOMPLETE and updates.checked == 12 and updates.failed == 0
    )
    assert sorted(case.case for case in report.cases if case.checked) == [
        "bfgs_updates",
        "dense_records",
    ]
