"""MkDocs hooks: the notebooks of ``notebooks/`` become pages of the site; docstring roles.

MkDocs reads only ``docs_dir``; the notebooks live beside it. These hooks add every
``*.ipynb`` of the notebook folder to the site as ``<folder name>/<name>.ipynb`` (mkdocs-jupyter
renders it) and list them, in file-name order, in the nav section ``Notebooks``. The folder is
``notebooks/`` next to ``mkdocs.yml``, or ``$KFQN_NOTEBOOKS_DIR`` (``tests/test_docs.py`` points it
at a folder ``notebooks`` of the notebooks it has just executed, so the URLs are the same).

The docstrings cite other objects with Sphinx roles (``:func:`name```); the API pages show such a
reference as the code span ``name`` (``~a.b.c`` as ``c``), as Sphinx would, without the role.
"""

import os
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

NAV_SECTION = "Notebooks"
#: A Sphinx role as mkdocstrings renders it: ``:func:<code>~a.b.c</code>``.
SPHINX_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def notebook_paths(config: MkDocsConfig) -> list[Path]:
    """The notebooks to publish, sorted by file name."""
    default = Path(config.config_file_path).parent / "notebooks"
    folder = Path(os.environ.get("KFQN_NOTEBOOKS_DIR", default))
    return sorted(folder.glob("*.ipynb"))


def source_uri(notebook: Path) -> str:
    """Where the site places a notebook: ``<folder name>/<file name>``."""
    return f"{notebook.parent.name}/{notebook.name}"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Fill the nav section ``Notebooks`` (an empty list in ``mkdocs.yml``); drop it if empty."""
    pages = [source_uri(path) for path in notebook_paths(config)]
    nav = []
    for entry in config.nav:
        if isinstance(entry, dict) and NAV_SECTION in entry:
            if pages:
                nav.append({NAV_SECTION: pages})
        else:
            nav.append(entry)
    config.nav = nav
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the notebooks as files of the site, at :func:`source_uri`."""
    for path in notebook_paths(config):
        # a File read from the notebook's folder's parent, not File.generated: mkdocs-jupyter's
        # NotebookFile finds the source through src_dir, which a generated File leaves unset
        files.append(
            File(
                source_uri(path),
                src_dir=str(path.parent.parent),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


def on_page_content(html: str, **kwargs) -> str:
    """Sphinx roles of the docstrings as plain code spans (``~a.b.c`` as ``c``)."""
    return SPHINX_ROLE.sub(
        lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html
    )
