"""Open every page of the built book in headless Chromium, offline, and check what a reader sees.

Chromium is driven through the DevTools protocol over a websocket (websocket-client), so no
driver download is needed. Hostname lookups are disabled (`--host-resolver-rules`): a page that
needs the internet fails here exactly as it would for an offline reader. For each page the test
fails on console errors, failed or non-local requests, images that did not load, widgets that did
not render, and math that MathJax did not typeset; it saves a full-page screenshot under
`_build/screenshots/`. Chapter pages must also offer Colab and Binder launch links, and give every
image a non-empty alt text (a figure's comes from its cell's `mystnb.image.alt` metadata).

At the 1280 px window, no code block may scroll sideways (printed output wraps; a code line too
long for the column is reported with the number of characters the column fits) and no table may be
wider than the content column unless it sits in a scrolling container. Every heading that a
chapter's notebook declares in its markdown must be a heading of the chapter's page.
"""

import base64
import dataclasses
import html
import json
import os
import shutil
import subprocess
import re
import time
import urllib.parse
from pathlib import Path

import pytest
import websocket
import yaml

from book_tools.nbexport import ROOT

pytestmark = pytest.mark.browser

HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
# every page of the built book (not the theme's and vendored files under _static/)
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
               if not p.relative_to(HTML).parts[0].startswith("_")) or ["(book not built)"]
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
         "--window-size=1280,900", "--remote-debugging-port=0",
         # no DNS: any request to a named host fails, as it would offline
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def find_chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    pytest.fail("no Chromium found: `apt-get install chromium` (or set $CHROMIUM)")


class DevTools:
    """A minimal Chrome DevTools protocol client: one browser, one page (a flat session)."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active_port.is_file() and len(active_port.read_text().split()) == 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"{binary} did not start (exit code {self.process.returncode})")
            time.sleep(0.05)
        port, path = active_port.read_text().split()
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        if "id" not in message:
            self.events.append(message)
        return message

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_for(self, method: str, count: int = 1) -> None:
        deadline = time.monotonic() + self.timeout
        while sum(event["method"] == method for event in self.events) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {self.timeout} s")
            self._receive()

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    devtools = DevTools(find_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield devtools
    devtools.close()


# Wait until MathJax has typeset and every embedded widget is drawn (or 10 s have passed).
SETTLE = """(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const views = [...document.querySelectorAll('%(view)s')];
  const drawn = v => v.previousElementSibling && v.previousElementSibling.matches('.widget-subarea')
                     && v.previousElementSibling.querySelector('.jupyter-widgets');
  for (let i = 0; i < 200 && !views.every(drawn); i++) await new Promise(r => setTimeout(r, 50));
  await document.fonts.ready;
})()""" % {"view": WIDGET_VIEW}

# What the reader would see, as data.
INSPECT = """(() => {
  const views = [...document.querySelectorAll('%(view)s')];
  const widgets = views.map(v => {
    const area = v.previousElementSibling;
    if (!area || !area.matches('.widget-subarea')) return 'widget not rendered';
    const box = area.getBoundingClientRect();
    if (!area.querySelector('.jupyter-widgets') || box.height === 0 || !area.innerText.trim())
      return 'empty widget area';
    if (area.innerText.includes('Error displaying widget')) return area.innerText.slice(0, 200);
    return null;
  }).filter(Boolean);
  const emptyAreas = [...document.querySelectorAll('.widget-subarea')].filter(a => !a.children.length);
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const root = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const rawTex = [];
  while (walker.nextNode()) {
    const text = walker.currentNode.nodeValue;
    if (/\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{/.test(text)) rawTex.push(text.trim().slice(0, 80));
  }
  return {
    title: document.title,
    widgets: views.length,
    widgetProblems: widgets.concat(emptyAreas.map(() => 'empty .widget-subarea')),
    math: document.querySelectorAll('.math').length,
    untypesetMath: [...document.querySelectorAll('.math')]
        .filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    mathErrors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
        .map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 80)),
    rawTex: rawTex,
    brokenImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
        .map(i => i.currentSrc || i.src),
    imagesWithoutAlt: [...document.images].filter(i => !(i.getAttribute('alt') || '').trim())
        .map(i => (i.currentSrc || i.src).slice(0, 120)),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()""" % {"view": WIDGET_VIEW}


# The content column at a 1280 px window: code blocks wider than their box (scrollWidth beyond
# clientWidth), tables wider than the column outside a scrolling container, and the headings.
LAYOUT = r"""(() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  const px = (element, property) => parseFloat(getComputedStyle(element)[property]) || 0;
  const column = article.clientWidth - px(article, 'paddingLeft') - px(article, 'paddingRight');
  const charWidth = pre => {
    const probe = document.createElement('span');
    probe.textContent = 'x'.repeat(100);
    pre.appendChild(probe);
    const width = probe.getBoundingClientRect().width / 100;
    probe.remove();
    return width;
  };
  const wideBlocks = [...article.querySelectorAll('pre')]
      .filter(pre => pre.scrollWidth > pre.clientWidth).map(pre => {
    const lines = pre.textContent.split('\n');
    const inner = pre.clientWidth - px(pre, 'paddingLeft') - px(pre, 'paddingRight');
    return {
      kind: pre.closest('.cell_output') ? 'output'
          : pre.closest('.cell_input') ? 'input' : 'markdown',
      firstLine: (lines.find(line => line.trim()) || '').trimEnd().slice(0, 100),
      scrollWidth: pre.scrollWidth, clientWidth: pre.clientWidth,
      longestLine: Math.max(...lines.map(line => line.length)),
      fitsCharacters: Math.floor(inner / charWidth(pre)),
    };
  });
  const scrolls = table => {
    for (let box = table.parentElement; box && box !== article; box = box.parentElement)
      if (['auto', 'scroll'].includes(getComputedStyle(box).overflowX)
          && box.clientWidth <= column + 1) return true;
    return false;
  };
  const wideTables = [...article.querySelectorAll('table')]
      .filter(table => table.getBoundingClientRect().width > column + 1 && !scrolls(table))
      .map(table => ({width: Math.round(table.getBoundingClientRect().width),
                      firstRow: (table.rows[0] ? table.rows[0].innerText : '').slice(0, 80)}));
  const headings = [...article.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(heading => {
    const copy = heading.cloneNode(true);
    copy.querySelectorAll('.headerlink, .math, mjx-container').forEach(part => part.remove());
    return copy.textContent;
  });
  return {column: Math.round(column), wideBlocks, wideTables, headings};
})()"""

def problems_in(events: list[dict], base: str) -> list[str]:
    """Console errors, uncaught exceptions, failed and non-local requests among CDP events."""
    found, urls = [], {}
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            found.append(f"console.{params['type']}: {text[:300]}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught exception: {text[:300]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            found.append(f"log error ({entry['source']}): {entry['text'][:200]} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = urls[params["requestId"]] = params["request"]["url"]
            if not (url.startswith(base) or url.split(":", 1)[0] in ("data", "blob", "about")):
                found.append(f"non-local request: {url}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = urls.get(params["requestId"], f"request {params['requestId']}")
            found.append(f"request failed: {params.get('errorText')}: {url} ({params.get('type')})")
    return found


def launch_links(page: str) -> tuple[str, str]:
    """The Colab and Binder URLs that the launch dropdown of notebook page `page` must offer."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config["repository"]["url"].removeprefix("https://github.com/")
    branch = config["repository"]["branch"]
    notebook = page.removesuffix(".html") + ".ipynb"
    buttons = config["launch_buttons"]
    colab = f"{buttons['colab_url']}/github/{repository}/blob/{branch}/{notebook}"
    binder = f"{buttons['binderhub_url']}/v2/gh/{repository}/{branch}?urlpath=lab/tree/{notebook}"
    return colab, binder


@dataclasses.dataclass
class Visit:
    """One page as the browser showed it: what INSPECT and LAYOUT found, and the problems logged."""

    page: str
    seen: dict
    layout: dict
    logged: list[str]


@pytest.fixture(scope="module", params=PAGES)
def visit(request, browser, book_url) -> Visit:
    """Open one page (once for all the tests that take it), inspect it and save a screenshot."""
    page = request.param
    browser.events.clear()
    browser.call("Page.navigate", session=True, url=urllib.parse.urljoin(book_url, page))
    # a redirect page (index.html) loads twice: itself, then its target
    redirect = 'http-equiv="refresh"' in (HTML / page).read_text(encoding="utf-8").lower()
    browser.wait_for("Page.loadEventFired", count=2 if redirect else 1)
    browser.evaluate(SETTLE)
    seen = browser.evaluate(INSPECT)
    layout = browser.evaluate(LAYOUT)
    browser.call("Runtime.evaluate", session=True, expression="0")  # drain pending events
    logged = problems_in(browser.events, book_url)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # the whole page in one tall viewport (a clip beyond the viewport garbles very long pages),
    # cut at Chromium's largest texture
    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=1280,
                 height=min(seen["height"], 16384), deviceScaleFactor=1, mobile=False)
    shot = browser.call("Page.captureScreenshot", session=True, format="png")
    browser.call("Emulation.clearDeviceMetricsOverride", session=True)
    (SCREENSHOTS / page.replace("/", "__").replace(".html", ".png")).write_bytes(
        base64.b64decode(shot["data"]))
    return Visit(page, seen, layout, logged)


def test_page_renders_offline(visit):
    page, seen = visit.page, visit.seen
    problems = list(visit.logged)
    problems += [f"widget: {p}" for p in seen["widgetProblems"]]
    problems += [f"math not typeset: {m!r}" for m in seen["untypesetMath"]]
    problems += [f"MathJax error: {m!r}" for m in seen["mathErrors"]]
    problems += [f"raw TeX in text: {t!r}" for t in seen["rawTex"]]
    problems += [f"image did not load: {src}" for src in seen["brokenImages"]]
    if (ROOT / page).with_suffix(".ipynb").is_file():
        for link in launch_links(page):
            if link not in seen["links"]:
                problems.append(f"launch button missing: {link}")
        problems += [f"image without alt text: {src}" for src in seen["imagesWithoutAlt"]]
    assert seen["title"], f"{page}: no title"
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def overflow_report(layout: dict) -> list[str]:
    """One line per code block or table that LAYOUT found wider than the content column."""
    lines = [f"{b['kind']} code block {b['firstLine']!r}: scrollWidth {b['scrollWidth']} > "
             f"clientWidth {b['clientWidth']} px (longest line {b['longestLine']} characters, "
             f"the block fits {b['fitsCharacters']})" for b in layout["wideBlocks"]]
    lines += [f"table {t['firstRow']!r}: {t['width']} px wide in a {layout['column']} px column, "
              "not in a scrolling container" for t in layout["wideTables"]]
    return lines


def test_code_and_tables_fit_the_column(visit):
    """At a 1280 px window no code block scrolls sideways and no table pokes out of the column.

    Printed output wraps (book/_static/book.css); code is shown as written, so a line that is too
    long for the column is reported with the number of characters the column fits.
    """
    assert visit.layout["column"] > 0, f"{visit.page}: no content column found"
    report = overflow_report(visit.layout)
    assert not report, f"{visit.page} at 1280 px:\n  " + "\n  ".join(report)


CURLY_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")


def normalised(heading: str) -> str:
    """A heading's words for comparison: no markup, math, permalink marks or extra whitespace.

    Math is dropped from both sides because MathJax replaces the TeX on the page; Sphinx's curly
    quotes are read as straight ones.
    """
    text = html.unescape(heading).translate(CURLY_QUOTES)
    text = re.sub(r"\$[^$]*\$", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)   # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[`*_#¶]", "", text)
    return " ".join(text.split())


def notebook_headings(notebook: Path) -> list[str]:
    """The ATX headings (`#` to `######`) of a notebook's markdown cells, outside code fences."""
    headings = []
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        fence = ""
        for line in "".join(cell["source"]).splitlines():
            marker = re.match(r" {0,3}(`{3,}|~{3,})", line)
            if fence:
                closes = marker and marker.group(1).startswith(fence)
                if closes and not line.strip().strip(fence[0]):
                    fence = ""
            elif marker:
                fence = marker.group(1)
            elif heading := re.match(r" {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$", line):
                headings.append(heading.group(1) or "")
    return headings


def missing_headings(notebook: Path, page_headings: list[str]) -> list[str]:
    """The notebook's headings that are not among the page's h1-h6 elements."""
    on_page = {normalised(h) for h in page_headings}
    return [h for h in notebook_headings(notebook) if normalised(h) not in on_page]


def test_chapter_page_shows_every_heading_of_its_notebook(visit):
    notebook = (ROOT / visit.page).with_suffix(".ipynb")
    if not notebook.is_file():
        pytest.skip("not a chapter page")
    assert notebook_headings(notebook), f"{notebook.name}: no headings found"
    missing = missing_headings(notebook, visit.layout["headings"])
    assert not missing, (f"{visit.page} lacks headings that {notebook.name} declares:\n  "
                         + "\n  ".join(missing))


def test_layout_check_reports_long_code_and_wide_tables(browser, book_url):
    """LAYOUT flags a long input line and a bare wide table, and passes wrapped output and a
    table in a scrolling container: checked on a chapter page whose content is replaced by them."""
    chapter = next(page for page in PAGES if (ROOT / page).with_suffix(".ipynb").is_file())
    browser.call("Page.navigate", session=True, url=urllib.parse.urljoin(book_url, chapter))
    browser.wait_for("Page.loadEventFired")
    browser.evaluate(SETTLE)
    browser.evaluate("""(() => {
      const long = 'value = ' + 'x + '.repeat(60) + 'x';
      const wide = '<table><tr>' + '<td>wide_table_cell_text</td>'.repeat(60) + '</tr></table>';
      document.querySelector('article.bd-article').innerHTML =
        `<section><div class="cell_input"><div class="highlight"><pre>${long}</pre></div></div>` +
        `<div class="cell_output"><div class="highlight"><pre>printed ${long}</pre></div></div>` +
        `<div id="bare">${wide}</div><div style="overflow-x: auto">${wide}</div></section>`;
    })()""")
    layout = browser.evaluate(LAYOUT)
    assert [b["kind"] for b in layout["wideBlocks"]] == ["input"], overflow_report(layout)
    assert layout["wideBlocks"][0]["firstLine"].startswith("value = x + x")
    assert len(layout["wideTables"]) == 1, overflow_report(layout)


def test_heading_check_reports_a_missing_heading(tmp_path):
    cells = [{"cell_type": "markdown", "source": ["# 1. GPT-2's tokens\n", "text\n", "```python\n",
                                                  "# a comment, not a heading\n", "```\n"]},
             {"cell_type": "code", "source": ["# a code comment\n"]},
             {"cell_type": "markdown", "source": ["## Scaling by $\\sqrt{d_k}$ ##\n",
                                                  "### What `gpt2_core` *keeps*"]}]
    notebook = tmp_path / "demo.ipynb"
    notebook.write_text(json.dumps({"cells": cells}))
    assert notebook_headings(notebook) == ["1. GPT-2's tokens", "Scaling by $\\sqrt{d_k}$",
                                           "What `gpt2_core` *keeps*"]
    page = ["1. GPT-2\u2019s tokens#", "Scaling by #", "What gpt2_core keeps\n#"]
    assert missing_headings(notebook, page) == []
    assert missing_headings(notebook, page[1:]) == ["1. GPT-2's tokens"]


def test_the_checks_have_something_to_check(html_dir):
    """The book embeds at least one widget and some math, so those checks are exercised."""
    text = "".join(p.read_text(encoding="utf-8") for p in html_dir.rglob("*.html"))
    assert 'type="application/vnd.jupyter.widget-view+json"' in text
    assert 'class="math notranslate nohighlight"' in text
    notebooks = [page for page in PAGES if (ROOT / page).with_suffix(".ipynb").is_file()]
    assert notebooks, "no chapter page found, so no launch button was checked"


def test_chapter_pages_hide_the_exporter_markers(html_dir):
    """`#| export MODULE` lines stay in the notebooks but not on the pages (export_markers.py)."""
    pages = sorted((html_dir / "chapters").glob("*.html"))
    assert pages, "no chapter page was built"
    # a marker is a comment line (Pygments' class "c1"); chapter 0's exporter demo writes
    # one inside a string, which is content, not a marker
    marker = re.compile(r'<span class="c1">#\|\s*export\b')
    shown = [page.name for page in pages if marker.search(page.read_text(encoding="utf-8"))]
    assert not shown, f"pages showing '#| export' lines: {shown}"
