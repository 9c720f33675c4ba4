"""The teaching notebooks run top to bottom, and are committed without outputs.

Every ``notebooks/*.ipynb`` is executed by a kernel on this interpreter (``conftest.py``'s
``notebook_runner``, which also hands the executed copies to the site build of ``test_docs.py``),
with a limit of ``NOTEBOOK_TIMEOUT_S`` for the whole notebook. A notebook ends its sections with
assertions of the facts it teaches, so an error in any cell is a failed test.
"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"

#: The notebooks of the course, in reading order (the site lists them in file-name order).
EXPECTED = [
    "01_dense_kronecker.ipynb",
    "02_conv_kronecker.ipynb",
    "03_bfgs_lbfgs_damping.ipynb",
    "04_hessian_action_bfgs.ipynb",
    "05_kbfgs_vs_baselines.ipynb",
    "06_golden_files.ipynb",
    "07_convergence.ipynb",
]

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_every_notebook_of_the_course_exists():
    present = {path.name for path in NOTEBOOKS}
    missing = [name for name in EXPECTED if name not in present]
    assert not missing, f"missing notebooks in {NOTEBOOKS_DIR}: {missing}"


def test_every_notebook_is_one_of_the_course():
    unknown = [path.name for path in NOTEBOOKS if path.name not in EXPECTED]
    assert not unknown, f"notebooks not listed in EXPECTED: {unknown}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_has_no_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    dirty = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{notebook.name}: code cells {dirty} carry outputs or execution counts"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(notebook, notebook_runner):
    executed = nbformat.read(notebook_runner.run(notebook), as_version=4)
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code_cells, f"{notebook.name} has no code"
    assert all(cell.execution_count is not None for cell in code_cells)
