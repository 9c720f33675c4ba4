"""Shared helpers of the golden tests: the committed folder and candidate folders from it."""

from pathlib import Path

import numpy as np

from kfqn_ref.golden.format import read_golden_case

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_arrays(case: str) -> dict[str, np.ndarray]:
    """A copy of the committed arrays of ``case`` (a candidate that agrees everywhere)."""
    return {name: array.copy() for name, array in read_golden_case(GOLDEN, case).arrays.items()}


def write_candidate(directory: Path, case: str, arrays: dict) -> Path:
    """Write ``arrays`` as the candidate file of ``case`` with plain ``numpy.savez``."""
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / f"{case}.npz", **arrays)
    return directory
