"""The README's tour runs as written, and its two set-up commands are the ones CI and users run."""

import pathlib
import re
import runpy

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def marked_command(marker: str) -> str:
    match = re.search(
        rf"<!-- {marker} -->\n```bash\n(.*?)\n```\n<!-- /{marker} -->",
        README.read_text(),
        flags=re.DOTALL,
    )
    assert match is not None, f"README.md has no ```bash block between the {marker} markers"
    return match.group(1)


def test_tour_runs_and_its_structure_formula_matches_autograd(tmp_path, monkeypatch, capsys):
    (tour,) = fenced_blocks("python")
    script = tmp_path / "tour.py"
    script.write_text(tour)
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    namespace = runpy.run_path(str(script))
    assert not any(working.iterdir()), "the tour writes nothing into the working directory"
    saved = namespace["restored"]  # the checkpoint it wrote into a temporary folder, read back
    assert all(np.array_equal(saved[k], v) for k, v in namespace["opt"].state_dict().items())
    # the last printed number is max |autograd block - structure formula|: exact in exact arithmetic
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(last_line) <= 1e-12 * float(abs(namespace["H"]).max())


@pytest.mark.parametrize(
    "marker, ending",
    [("main-command", "kfqn-ref compare --out runs/compare"), ("test-command", "-m pytest -q")],
)
def test_set_up_commands_create_a_fresh_environment(marker, ending):
    command = marked_command(marker)
    assert "\n" not in command, "each set-up command is one line"
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert command.endswith(ending)
