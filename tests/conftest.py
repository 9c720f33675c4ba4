"""Shared test configuration: hypothesis profiles, float64 comparison helpers, notebook runner.

Profiles
--------
``ci`` (the default): deterministic (``derandomize=True``), a bounded number of examples, no
deadline (timings on a shared 2-core machine are noisy). ``thorough``: many more random examples,
for local runs: ``HYPOTHESIS_PROFILE=thorough pytest``.
"""

import os
import time
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, settings
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# --- notebooks: executed once per session, reused by tests/test_notebooks.py and test_docs.py ---

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Wall-clock limit for one notebook, kernel start included (the notebooks aim at 60 s).
NOTEBOOK_TIMEOUT_S = 120


class NotebookRunner:
    """Executes notebooks with a kernel on this interpreter; each notebook at most once.

    The kernel runs ``sys.executable`` (a kernel spec written into the session's temporary folder,
    so no installed ``python3`` kernel of another environment is picked up), in ``notebooks/``,
    with the repository first on ``PYTHONPATH``. An executed notebook is written to
    ``out_dir/<name>``; a failure (an error in a cell, or the time limit) is re-raised on every
    later request for the same notebook.
    """

    def __init__(self, out_dir: Path, kernel_dirs: Path) -> None:
        self.out_dir = out_dir
        write_kernel_spec(kernel_dirs / "kfqn-test", overrides={"display_name": "kfqn-test"})
        self.kernel_specs = KernelSpecManager(kernel_dirs=[str(kernel_dirs)])
        self.results: dict[str, Path | BaseException] = {}

    def run(self, notebook: Path) -> Path:
        """The executed copy of ``notebook`` (executed now if it was not yet)."""
        if notebook.name not in self.results:
            try:
                self.results[notebook.name] = self._execute(notebook)
            except Exception as error:  # kept, and raised for every caller
                self.results[notebook.name] = error
        result = self.results[notebook.name]
        if isinstance(result, BaseException):
            raise result
        return result

    def _execute(self, notebook: Path) -> Path:
        nb = nbformat.read(notebook, as_version=4)
        deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
        km = KernelManager(kernel_name="kfqn-test", kernel_spec_manager=self.kernel_specs)
        client = NotebookClient(
            nb,
            km=km,
            # each cell may use what is left of the notebook's time (at least 1 s, to fail fast)
            timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        try:
            client.execute(env=env)
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
        elapsed = NOTEBOOK_TIMEOUT_S - (deadline - time.monotonic())
        if elapsed > NOTEBOOK_TIMEOUT_S:
            raise TimeoutError(f"{notebook.name} took {elapsed:.0f} s > {NOTEBOOK_TIMEOUT_S} s")
        out = self.out_dir / notebook.name
        nbformat.write(nb, out)
        return out


@pytest.fixture(scope="session")
def notebook_runner(tmp_path_factory: pytest.TempPathFactory) -> NotebookRunner:
    """The session's :class:`NotebookRunner`; executed notebooks land in ``<tmp>/notebooks``."""
    out_dir = tmp_path_factory.mktemp("executed") / "notebooks"
    out_dir.mkdir()
    return NotebookRunner(out_dir, tmp_path_factory.mktemp("kernels"))
