"""Hide the exporter's `#| export MODULE` lines in the rendered book (Sphinx extension).

The marker tells `book_tools.nbexport` which module a cell belongs to; a reader of the HTML book
does not need it, so the first line of each code cell that matches the exporter's own pattern is
dropped from the page. The notebooks keep it, and so does Jupyter or Colab.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from book_tools.nbexport import MARKER  # noqa: E402


def without_marker(source: str) -> str:
    """`source` without a leading export marker line (and the blank line after it)."""
    first, _, rest = source.partition("\n")
    if not MARKER.match(first):
        return source
    return rest.lstrip("\n") if rest.startswith("\n") else rest


def _strip_markers(app, doctree: nodes.document) -> None:
    for container in doctree.findall(nodes.container):
        if container.get("nb_element") != "cell_code_source":
            continue
        for block in container.findall(nodes.literal_block):
            text = block.astext()
            shown = without_marker(text)
            if shown != text:
                block.children = [nodes.Text(shown)]
                block.rawsource = shown


def setup(app):
    app.connect("doctree-read", _strip_markers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
