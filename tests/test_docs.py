"""The documentation site builds strictly, and every displayed equation names an existing test.

Site: ``mkdocs build --strict`` of ``mkdocs.yml`` into a temporary folder, with the notebooks that
``test_notebooks.py`` executed (``conftest.py``'s ``notebook_runner``), so the notebook pages show
their outputs and nothing is executed twice.

Equations. The pages write a displayed equation as an indented plain-text block (four spaces,
after a blank line) holding a relation (``=``, ``<`` or ``>``; an indented shell command is not an
equation); ``$$ ... $$``, ``\\[ ... \\]`` and fenced ``math`` blocks count as well. A displayed
equation NAMES ITS TEST when a test reference appears in the text that follows it, before the next
displayed equation or heading. A test reference is a code span holding ``<file>.py::<test>``
(``<file>`` a path under ``tests/`` or just a file name there; ``<test>`` a function or
``Class::method``; a ``[parameter id]`` suffix is ignored), or a bare ``test_<name>`` after such a
reference in the same paragraph (it belongs to the file named last). A bare ``test_<name>`` with no
file named before it in its paragraph is a test reference only if some test file defines it (so a
column called ``test_accuracy`` is not one). Every test reference on every page, near an equation
or not, must name a test that exists.
"""

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TESTS = REPO / "tests"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

QUALIFIED = r"(?P<file>[\w./-]*test_\w*\.py)(?P<names>(?:::\w+)+)(?:\[[^\]`]*\])?"
BARE = r"(?P<bare>test_\w+)(?:\[[^\]`]*\])?"
TEST_REFERENCE = re.compile(rf"`(?:{QUALIFIED}|{BARE})`")
TEST_FILE_REFERENCE = re.compile(r"`(?P<file>(?:tests/)?[\w./-]*test_\w*\.py)`")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*(\w*)")


@dataclass(frozen=True)
class Block:
    """A displayed equation (or a code fence) of a page: lines ``start..end`` (0-based)."""

    start: int
    end: int
    kind: str  # "equation", "code" or "heading"


def page_blocks(lines: list[str]) -> list[Block]:
    """Headings, code fences and displayed equations of a page, in order."""
    blocks, i = [], 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        fence = FENCE.match(line)
        if fence:
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence[1])),
                len(lines) - 1,
            )
            blocks.append(Block(i, end, "equation" if fence[2] == "math" else "code"))
        elif stripped.startswith(("$$", "\\[")):
            closing = "$$" if stripped.startswith("$$") else "\\]"
            one_line = len(stripped) > 2 and stripped.endswith(closing)
            end = i if one_line else i + 1
            while end < len(lines) - 1 and not lines[end].strip().endswith(closing):
                end += 1
            blocks.append(Block(i, end, "equation"))
        elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            end = i  # the run of indented (or blank) lines, trailing blank lines excluded
            for j in range(i + 1, len(lines)):
                if lines[j].strip() and not lines[j].startswith("    "):
                    break
                end = j if lines[j].strip() else end
            relation = any(sign in "".join(lines[i : end + 1]) for sign in "=<>")
            blocks.append(Block(i, end, "equation" if relation else "code"))
        else:
            if line.startswith("#"):
                blocks.append(Block(i, i, "heading"))
            i += 1
            continue
        i = blocks[-1].end + 1
    return blocks


def pages() -> list[tuple[str, str]]:
    """``(path relative to the repository, text)`` of every page of ``docs/``."""
    return [
        (str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))
        for path in sorted(DOCS.rglob("*.md"))
    ]


def prose(lines: list[str], blocks: list[Block]) -> list[str]:
    """The page with code fences and displayed equations blanked (their spans are not prose)."""
    text = list(lines)
    for block in blocks:
        if block.kind != "heading":
            text[block.start : block.end + 1] = [""] * (block.end + 1 - block.start)
    return text


def defined_tests() -> dict[Path, set[str]]:
    """Per test file, its test functions and ``Class::method`` names (by parsing, not importing)."""
    tests = {}
    for path in TESTS.rglob("*.py"):
        names = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.update(
                    f"{node.name}::{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                )
        tests[path] = {name for name in names if name.split("::")[-1].startswith("test")}
    return tests


def files_named(reference: str, tests: dict[Path, set[str]]) -> list[Path]:
    """The test files a page's ``tests/x/test_y.py``, ``x/test_y.py`` or ``test_y.py`` means."""
    parts = Path(reference).parts
    if parts[0] == "tests":
        parts = parts[1:]
    return [path for path in tests if path.relative_to(TESTS).parts[-len(parts) :] == parts]


@dataclass(frozen=True)
class Reference:
    """A test named on a page: at ``line`` (1-based), ``test`` in one of ``files``."""

    line: int
    test: str
    files: list[Path]
    written: str  # the file as the page wrote it, or the name of the file named before


def named_tests(lines: list[str], tests: dict[Path, set[str]]) -> list[Reference]:
    """The test references of a page (module docstring), in order."""
    references, current, written = [], None, ""
    for number, line in enumerate(prose(lines, page_blocks(lines)), start=1):
        if not line.strip():
            current = None  # a bare name belongs to the file last named in ITS paragraph
        for match in TEST_REFERENCE.finditer(line):
            if match["file"]:
                current, written = files_named(match["file"], tests), match["file"]
                references.append(Reference(number, match["names"][2:], current, written))
            elif current is not None:
                references.append(Reference(number, match["bare"], current, written))
            elif any(match["bare"] in names for names in tests.values()):
                references.append(Reference(number, match["bare"], list(tests), "tests/"))
    return references


def reference_problems(name: str, page: str, tests: dict[Path, set[str]]) -> list[str]:
    """Every test or test file the page names that does not exist (``name:line: reason``)."""
    lines = page.splitlines()
    problems = [
        f"{name}:{number}: no test file {match['file']}"
        for number, line in enumerate(prose(lines, page_blocks(lines)), start=1)
        for match in TEST_FILE_REFERENCE.finditer(line)
        if not files_named(match["file"], tests)
    ]
    problems += [
        f"{name}:{ref.line}: no test {ref.test} in {ref.written}"
        for ref in named_tests(lines, tests)
        if not any(ref.test in tests[path] for path in ref.files)
    ]
    return sorted(problems, key=lambda problem: int(problem.split(":")[1]))


def equations_without_a_test(name: str, page: str, tests: dict[Path, set[str]]) -> list[str]:
    """Displayed equations of the page followed by no test reference before the next one."""
    lines = page.splitlines()
    blocks = page_blocks(lines)
    named = [ref.line - 1 for ref in named_tests(lines, tests)]  # 0-based, like blocks
    missing = []
    for k, block in enumerate(blocks):
        if block.kind != "equation":
            continue
        stop = next((b.start for b in blocks[k + 1 :] if b.kind != "code"), len(lines))
        if not any(block.end < line < stop for line in named):
            first = lines[block.start].strip()
            missing.append(f"{name}:{block.start + 1}: {first[:60]}")
    return missing


def test_every_named_test_exists():
    tests = defined_tests()
    problems = [problem for page in pages() for problem in reference_problems(*page, tests)]
    assert not problems, "named tests that do not exist:\n" + "\n".join(problems)


def test_every_displayed_equation_names_its_test():
    assert pages()
    tests = defined_tests()
    missing = [line for page in pages() for line in equations_without_a_test(*page, tests)]
    assert not missing, (
        f"{len(missing)} displayed equations name no test before the next equation or heading:\n"
        + "\n".join(missing)
    )


def test_the_reference_parser_on_a_sample_page():
    """The rules of the module docstring, on a page written for them (line numbers at the right)."""
    page = "\n".join(
        [
            "# Title",  # 1
            "",
            "    a = b                          (1)",  # 3: named by line 5
            "",
            "*Test:* `test_docs.py::test_every_named_test_exists`, `test_no_such_test`.",  # 5
            "",
            "    c = d",  # 7: one block with line 9, named by nothing before line 15
            "",
            "    e = f",
            "",
            "A column `test_accuracy` is no test; `test_gone.py` is no file.",  # 11
            "",
            "    kfqn-ref golden list",  # 13: a command, not an equation
            "",
            "$$",  # 15
            "g = h",
            "$$",
            "",
            "```python",
            "x = 1  # `test_inside_a_fence_is_ignored`",  # 20
            "```",
            "",
            "`tests/test_docs.py::test_site_builds_strictly`",  # 23: names the $$ block
        ]
    )
    tests = defined_tests()
    assert reference_problems("p.md", page, tests) == [
        "p.md:5: no test test_no_such_test in test_docs.py",
        "p.md:11: no test file test_gone.py",
        "p.md:23: no test test_site_builds_strictly in tests/test_docs.py",
    ]
    assert equations_without_a_test("p.md", page, tests) == ["p.md:7: c = d"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, notebook_runner) -> Path:
    """The site built with ``mkdocs build --strict``; fails the test that uses it otherwise."""
    executed = [notebook_runner.run(notebook) for notebook in NOTEBOOKS]
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        KFQN_NOTEBOOKS_DIR=str(executed[0].parent if executed else out / "no-notebooks"),
        KFQN_DOCS_EXECUTE_NOTEBOOKS="false",
        NO_MKDOCS_2_WARNING="1",
    )
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml")]
        + ["--site-dir", str(out / "html")],
        cwd=out,  # mkdocs-jupyter's cache folder lands here, not in the repository
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"
    return out / "html"


def test_site_builds_strictly_with_every_page(site):
    for name, _ in pages():
        relative = Path(name).relative_to("docs").with_suffix("")
        html = site / ("index.html" if relative.name == "index" else relative / "index.html")
        assert html.is_file(), f"{name} has no page in the site"
    for notebook in NOTEBOOKS:
        html = (site / "notebooks" / notebook.stem / "index.html").read_text(encoding="utf-8")
        assert "jp-Notebook" in html or "jp-Cell" in html, f"{notebook.name} not rendered"


def test_site_marks_math_for_mathjax_and_renders_the_api(site):
    home = (site / "index.html").read_text(encoding="utf-8")
    assert '<div class="arithmatex">' in home
    assert "javascripts/mathjax.js" in home and "tex-mml-chtml.js" in home
    for module in ["nn", "curvature", "quasi_newton", "optim", "data", "backend"]:
        api = (site / "api" / module / "index.html").read_text(encoding="utf-8")
        assert f"kfqn_ref.{module}" in api and 'class="doc doc-heading"' in api
        assert not re.search(r":(func|class|meth|mod):<code>", api), "a Sphinx role left raw"
