"""The built book, as files and as served pages. Build it first (`make book-strict`).

Everything in this folder is marked `browser`: it checks `_build/html`, so it is deselected from a
plain `pytest tests` run (see pyproject.toml) and runs in `make browser-test`, after the build.
"""

import functools
import http.server
import threading
from pathlib import Path

import pytest

from book_tools.nbexport import ROOT

HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="session")
def html_dir() -> Path:
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `jupyter-book build . -W -n --keep-going` first")
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="session")
def book_url(html_dir):
    """Serve _build/html on 127.0.0.1 at a free port, for the whole session."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()
