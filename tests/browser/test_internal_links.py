"""Every relative link and resource in the built book points at a file (and anchor) that exists,
and no page loads a script, stylesheet or image from another host."""

import html.parser
import urllib.parse
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

LINK_ATTRIBUTES = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src",
                   "source": "src", "video": "src", "audio": "src"}
EXTERNAL_SCHEMES = ("http", "https", "mailto", "data", "javascript", "tel")


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, rel, url)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for key in ("id", "name"):
            if attributes.get(key):
                self.ids.add(attributes[key])
        url = attributes.get(LINK_ATTRIBUTES.get(tag, ""))
        if url is not None:
            self.links.append((tag, attributes.get("rel") or "", url))


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_relative_links_resolve(html_dir):
    pages = sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts)
    parsed = {path: parse(path) for path in pages}
    broken, remote = [], []
    for path, page in parsed.items():
        where = path.relative_to(html_dir)
        for tag, rel, url in page.links:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme or parts.netloc:
                # a link to another site is fine; loading a resource from one is not (offline)
                if tag != "a" and (tag != "link" or rel in ("stylesheet", "icon", "preload")):
                    remote.append(f"{where}: <{tag}> {url}")
                continue
            target = (path.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{where}: {url} (no file {target})")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse(target).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    broken.append(f"{where}: {url} (no anchor #{parts.fragment})")
    assert sum(len(page.links) for page in parsed.values()) > 100, "suspiciously few links parsed"
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert not remote, "resources loaded from other hosts:\n" + "\n".join(remote)
