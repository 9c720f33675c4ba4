"""Export is deterministic: byte-identical across processes, equal to the committed files, and
within the stated tolerances on another BLAS code path.

The other path: ``OPENBLAS_CORETYPE=Prescott`` makes the (DYNAMIC_ARCH) OpenBLAS that NumPy ships
use its SSE3 kernels instead of the AVX2/FMA ones chosen for this CPU, which changes the rounding of
every matrix product (on the machine the files were made, about 3400 of 4900 arrays change in
their last bits; the largest normwise relative change is 2e-12, in Shampoo's eigendecompositions).
``OPENBLAS_NUM_THREADS=1`` is set on that run too; at these sizes it changes no bit by itself.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden_tests.helpers import GOLDEN
from kfqn_ref.golden import check, export
from kfqn_ref.golden.format import library_versions, read_golden_case

REPO = Path(__file__).resolve().parents[2]


def _export(directory: Path, **env) -> subprocess.Popen:
    command = [sys.executable, "-m", "kfqn_ref.golden.cli", "golden", "export", str(directory)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Three fresh exports in three processes: two alike, one on the other BLAS path."""
    root = tmp_path_factory.mktemp("exports")
    runs = {
        "first": _export(root / "first"),
        "second": _export(root / "second"),
        "other_blas": _export(
            root / "other_blas", OPENBLAS_CORETYPE="Prescott", OPENBLAS_NUM_THREADS="1"
        ),
    }
    for name, process in runs.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, (name, err.decode())
    return {name: root / name for name in runs}


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_two_processes_write_byte_identical_files(exports):
    first, second = _files(exports["first"]), _files(exports["second"])
    assert len(first) == 2 * len(export.CASE_BUILDERS)
    assert first == second


def test_the_committed_files_match_a_fresh_export(exports):
    fresh = exports["first"]
    assert check.check(GOLDEN, fresh).exit_status == 0
    assert all(case.status is check.Status.PASS for case in check.check(GOLDEN, fresh).cases)
    committed_versions = json.loads((GOLDEN / "dense_records.json").read_text())["library_versions"]
    names = sorted(path.stem for path in GOLDEN.glob("*.json"))
    assert names == sorted(path.stem for path in fresh.glob("*.json"))
    if committed_versions == library_versions():  # the platform the files were made on
        assert _files(GOLDEN) == _files(fresh)
    else:  # another NumPy or CPU: the manifests still agree except for the versions
        for name in names:
            ours = json.loads((GOLDEN / f"{name}.json").read_text())
            theirs = json.loads((fresh / f"{name}.json").read_text())
            for manifest in (ours, theirs):
                manifest.pop("library_versions"), manifest.pop("sha256")
            assert ours == theirs, name


def test_another_blas_path_stays_within_the_stated_tolerances(exports):
    other = exports["other_blas"]
    report = check.check(GOLDEN, other)
    assert [case.status for case in report.cases] == [check.Status.PASS] * len(export.CASE_BUILDERS)
    changed = 0
    for path in GOLDEN.glob("*.json"):
        ours, theirs = read_golden_case(GOLDEN, path.stem), read_golden_case(other, path.stem)
        changed += sum(not np.array_equal(ours.arrays[n], theirs.arrays[n]) for n in ours.arrays)
    if changed == 0:
        pytest.skip("this OpenBLAS ignores OPENBLAS_CORETYPE: no second code path to compare")
    assert changed > 100
