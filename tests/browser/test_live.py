"""The live pages in headless Chromium, offline: the JavaScript agrees with the Python package.

bpe.js must encode and decode token for token like `BPETokenizer` (the book's and GPT-2's
vocabularies); the book's model, run by onnxruntime-web, must decode greedily (and with beam
search) to the token ids `gpt2_core.generate` gives; sampler.js's top-k, top-p and min-p must cut
the tokens that TopK, TopP and MinP cut. The panels are mounted into a test page and driven like a
reader would; their time to the first token and speed are printed (run with -s to see them).

The panels are mounted into a page of the built book (its index of terms), so these tests do
not depend on which chapter holds them.
"""

import json
import time
import urllib.parse

import pytest
import torch

from gpt2_core import data
from gpt2_core.generate import MinP, TopK, TopP, generate
from gpt2_core.model import from_pretrained
from gpt2_core.tokenizer import BPETokenizer, gpt2_encoding
from gpt2_core.tokenizer_files import gpt2_bpe_files
from test_book_pages import DevTools, find_chromium, problems_in

pytestmark = pytest.mark.browser

CACHE = data.cache_dir()      # read at import, before the autouse fixture isolates the cache
TEXTS = [
    "", "Hello, world!", "ROMEO:\nBut soft, what light through yonder window breaks?",
    "café naïve résumé Ångström Œuvre", "東京タワー 日本語の文章", "한국어 텍스트", "Привет, мир",
    "emoji 😀👍🏽 🇫🇷 👩‍👩‍👧 ❤️", "  two  spaces   three    four\t\ttabs",
    "\n\n\nnewlines\r\n\r\nand CRLF", "trailing spaces   ", "   ", "\t",
    "it's we'll they're I'd 'S",
    "1234567 3.14159 ٣٤٥ ½", "\ufeffbom first", "nbsp\u00a0and\u3000ideographic space",
    "<|endoftext|>", "before<|endoftext|>after<|endoftext|>", "a lone \ud800 surrogate",
    "mixed: naïve 東京 😀 <|endoftext|> end  \n",
]


@pytest.fixture(scope="module")
def live_dir(html_dir):
    folder = html_dir / "_static" / "live"
    for name in ("live.js", "book/model.onnx", "book/model.json", "book/tokenizer.web.json",
                 "gpt2/tokenizer.web.json", "gpt2/encoder.json", "gpt2/vocab.bpe"):
        if not (folder / name).is_file():
            pytest.fail(f"{folder / name} is missing: rebuild the book (scripts/live_book.py)")
    return folder


@pytest.fixture(scope="module")
def book(live_dir):
    """The model and tokenizer that the build exported (found by the recipe key it recorded)."""
    info = json.loads((live_dir / "book" / "model.json").read_text())
    directory = CACHE / "models" / f"book-{info['gpt2_core.recipe_key']}" / "model"
    if not directory.is_dir():
        pytest.fail(f"{directory} is missing: the book was built from a model no longer cached")
    return from_pretrained(directory).eval(), BPETokenizer.load(directory / "tokenizer.json")


def open_page(devtools: DevTools, book_url: str) -> None:
    """Open a page of the book (its index of terms) and import the live modules as window.live."""
    url = urllib.parse.urljoin(book_url, "genindex.html")
    devtools.call("Page.navigate", session=True, url=url)
    devtools.wait_for("Page.loadEventFired")
    run_js(devtools, """
      const load = name => import(new URL(name, base).href);
      const [bpe, sampler, model] = await Promise.all(
          [load("bpe.js"), load("sampler.js"), load("model.js")]);
      window.live = {bpe, sampler, model, base};""",
           base=urllib.parse.urljoin(book_url, "_static/live/"))


@pytest.fixture(scope="module")
def page(tmp_path_factory, book_url, live_dir):
    """Chromium on a page of the book, with the live modules imported."""
    devtools = DevTools(find_chromium(), tmp_path_factory.mktemp("chromium-profile"), timeout=120)
    open_page(devtools, book_url)
    yield devtools
    devtools.close()


def run_js(page, body: str, **values):
    """Evaluate an async function body in the page, with `values` passed in as JSON."""
    arguments = ", ".join(values)
    literals = ", ".join(json.dumps(v) for v in values.values())
    return page.evaluate(f"(async ({arguments}) => {{ {body} }})({literals})")


def test_bpe_js_encodes_and_decodes_like_python(page, book):
    _, tokenizer = book
    js = run_js(page, """
      const tk = live.bpe.BPE.fromJSON(
          await (await fetch(live.base + "book/tokenizer.web.json")).json());
      const attempt = f => { try { return f(); } catch (error) { return "error"; } };
      return texts.map(text => ({
        all: tk.encode(text, {allowedSpecial: "all"}), ordinary: tk.encodeOrdinary(text),
        plain: attempt(() => tk.encode(text)),
        decoded: tk.decode(tk.encode(text, {allowedSpecial: "all"}))}));""", texts=TEXTS)

    def plain(text):
        try:
            return tokenizer.encode(text)
        except ValueError:
            return "error"
    for text, got in zip(TEXTS, js, strict=True):
        ids = tokenizer.encode(text, allowed_special="all")
        assert got["all"] == ids, text
        assert got["ordinary"] == tokenizer.encode_ordinary(text), text
        assert got["plain"] == plain(text), text
        assert got["decoded"] == tokenizer.decode(ids), text


def test_bpe_js_decodes_invalid_utf8_like_python(page, book):
    _, tokenizer = book
    byte = {b: tokenizer.encode_ordinary(chr(b))[0] for b in range(128)}
    raw = [tokenizer.vocab_size - 1] + [i for i, v in tokenizer.vocab.items() if v[0] >= 0x80][:40]
    sequences = [[i] for i in raw] + [raw[:7], [byte[65]] + raw[1:4] + [byte[66]], raw[::-1]]
    js = run_js(page, """
      const tk = live.bpe.BPE.fromJSON(
          await (await fetch(live.base + "book/tokenizer.web.json")).json());
      return sequences.map(ids => tk.decode(ids));""", sequences=sequences)
    assert js == [tokenizer.decode(ids) for ids in sequences]


def test_bpe_js_reads_gpt2_files_like_python(page):
    gpt2 = BPETokenizer.from_gpt2_files(*gpt2_bpe_files())
    tiktoken = gpt2_encoding()
    js = run_js(page, """
      const tk = await live.bpe.loadTokenizer(live.base + "gpt2/tokenizer.web.json");
      return texts.map(text => tk.encode(text, {allowedSpecial: "all"}));""", texts=TEXTS)
    for text, got in zip(TEXTS, js, strict=True):
        assert got == gpt2.encode(text, allowed_special="all"), text
        assert got == tiktoken.encode(text, allowed_special="all"), text


def js_decode(page, prompts, **options):
    return run_js(page, """
      window.bookModel = window.bookModel || await live.model.LiveModel.load();
      const forward = rows => bookModel.forward(rows);
      const out = [];
      for (const ids of prompts) {
        out.push(options.numBeams > 1 ? await live.sampler.beamSearch(forward, ids, options)
                                      : await live.sampler.decode(forward, ids, options));
      }
      return out;""", prompts=prompts, options=options)


PROMPTS = ["ROMEO:\n", "First Citizen:\nBefore we proceed any further, hear me speak.",
           "KING HENRY:\nOnce more unto the breach, dear friends, once more;\nOr close the wall "
           "up with our English dead."]


def test_greedy_decoding_in_the_page_gives_generates_tokens(page, book):
    """The third prompt with 60 new tokens outgrows the context: the window slides."""
    model, tokenizer = book
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    lengths = [40, 40, 60]
    got = [js_decode(page, [p], maxNewTokens=n)[0] for p, n in zip(prompts, lengths)]
    for prompt, n, tokens in zip(prompts, lengths, got):
        expected = generate(model, prompt, max_new_tokens=n, overflow="slide").sequences[0]
        assert tokens == expected, tokenizer.decode(prompt)
    assert len(prompts[2]) + lengths[2] > model.config.block_size


def test_beam_search_in_the_page_gives_generates_tokens(page, book):
    model, tokenizer = book
    prompts = [tokenizer.encode(p) for p in PROMPTS[:2]]
    options = dict(num_beams=3, max_new_tokens=12, repetition_penalty=1.3,
                   stop_tokens=(tokenizer.eot_token,))
    got = js_decode(page, prompts, numBeams=3, maxNewTokens=12, repetitionPenalty=1.3,
                    stopTokens=[tokenizer.eot_token])
    for prompt, tokens in zip(prompts, got):
        assert tokens == generate(model, prompt, **options).sequences[0]


def test_beam_search_stopped_early_keeps_the_best_running_beam(page, book):
    """Stopped after two steps, before any beam ends: the text so far, not nothing."""
    _, tokenizer = book
    prompt = tokenizer.encode(PROMPTS[1])
    got = run_js(page, """
      window.bookModel = window.bookModel || await live.model.LiveModel.load();
      const forward = rows => bookModel.forward(rows);
      let steps = 0, shown = null;
      const tokens = await live.sampler.beamSearch(forward, ids, {numBeams: 3, maxNewTokens: 40},
        best => { steps++; shown = best; }, () => steps >= 2);
      return {tokens, shown};""", ids=prompt)
    assert len(got["tokens"]) == 2 and got["tokens"] == got["shown"]


def test_sampling_in_the_page_repeats_with_its_seed(page, book):
    _, tokenizer = book
    prompt = tokenizer.encode(PROMPTS[0])
    options = dict(maxNewTokens=30, doSample=True, temperature=0.9, topK=50, topP=0.95)
    runs = [js_decode(page, [prompt], **options, seed=seed)[0] for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_top_k_top_p_min_p_cut_what_the_python_processors_cut(page, book):
    """On random logits, the model's, and logits with ties. (top_p=1 is left out: generation
    switches TopP off there, and TopP(1.0) itself cuts the tail where float32 sums reach 1.)"""
    model, tokenizer = book
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(300, generator=generator) * scale for scale in (0.5, 2.0, 5.0)]
    with torch.no_grad():
        rows.append(model(torch.tensor([tokenizer.encode(PROMPTS[1])]))[0, -1])
    rows.append(torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 3.0, -1.0, 0.0]))   # ties
    cases = ([("topK", k, TopK(k)) for k in (1, 2, 5, 40, 1000)]
             + [("topP", p, TopP(p)) for p in (0.05, 0.3, 0.5, 0.9, 0.99)]
             + [("minP", m, MinP(m)) for m in (0.0, 0.01, 0.1, 0.5, 1.0)])
    logits = [row.float().tolist() for row in rows]
    js = run_js(page, """
      return cases.map(([name, value]) => logits.map(row =>
          Array.from(live.sampler[name](Float64Array.from(row), value), z => z > -Infinity)));""",
                cases=[[name, value] for name, value, _ in cases], logits=logits)
    for (name, value, processor), got in zip(cases, js, strict=True):
        for row, kept in zip(rows, got, strict=True):
            expected = torch.isfinite(processor(row.float()[None]))[0].tolist()
            assert kept == expected, f"{name}={value}"


def mount(page, kind: str) -> None:
    """Put a fresh panel container into the page and mount it with live.js."""
    run_js(page, """
      document.querySelectorAll("[class^=gpt2-live-]").forEach(e => e.remove());
      const container = document.createElement("div");
      container.className = kind;
      document.body.prepend(container);
      (await import(live.base + "live.js")).mount();""", kind=kind)


def wait_state(page, selector: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run_js(page, "return {...document.querySelector(selector).dataset};",
                       selector=selector)
        if state.get("state") in ("done", "error"):
            return state
        time.sleep(0.1)
    raise TimeoutError(f"{selector} did not finish within {timeout} s")


def test_playground_streams_the_greedy_continuation(tmp_path_factory, book_url, live_dir, book):
    """A fresh page, as a reader opens it: load, type, generate greedily; no console errors."""
    model, tokenizer = book
    devtools = DevTools(find_chromium(), tmp_path_factory.mktemp("chromium-profile"), timeout=120)
    try:
        open_page(devtools, book_url)
        mount(devtools, "gpt2-live-playground")
        run_js(devtools, """
          const panel = document.querySelector(".gpt2-live-playground");
          panel.querySelector('input[value="greedy"]').click();
          panel.querySelector("textarea").value = prompt;
          panel.querySelector('input[name="max_new_tokens"]').value = "50";
          panel.querySelector('button[type="submit"]').click();""", prompt=PROMPTS[0])
        state = wait_state(devtools, ".gpt2-live-playground")
        shown = run_js(devtools, """const panel = document.querySelector(".gpt2-live-playground");
          return [panel.querySelector(".gpt2-live-new-text").textContent,
                  panel.querySelectorAll(".gpt2-live-choice").length];""")
        devtools.evaluate("0")
        logged = problems_in(devtools.events, book_url)
    finally:
        devtools.close()
    assert state["state"] == "done" and not logged, logged
    prompt = tokenizer.encode(PROMPTS[0])
    expected = generate(model, prompt, max_new_tokens=50, overflow="slide",
                        stop_tokens=(tokenizer.eot_token,)).sequences[0]
    assert json.loads(state["tokens"]) == expected
    assert shown == [tokenizer.decode(expected), 10]
    print(f"\nplayground: first token {state['firstTokenMs']} ms after Generate (runtime and "
          f"model loaded cold), {float(state['tokensPerSecond']):.0f} tokens/s after it")


def test_tokenizer_explorer_shows_the_books_and_gpt2s_tokens(page, book):
    _, tokenizer = book
    run_js(page, "performance.clearResourceTimings();")
    mount(page, "gpt2-live-tokenizer")
    state = wait_state(page, ".gpt2-live-tokenizer")
    text = run_js(page, 'return document.querySelector(".gpt2-live-tokenizer textarea").value;')
    assert json.loads(state["tokens"]) == tokenizer.encode(text, allowed_special="all")
    fetched = run_js(page, "return performance.getEntriesByType('resource').map(e => e.name);")
    assert not any(url.endswith("encoder.json") for url in fetched), "GPT-2 loaded unasked"
    run_js(page, """const panel = document.querySelector(".gpt2-live-tokenizer");
      panel.querySelector('input[value="gpt2"]').click();
      panel.querySelector("textarea").value = text;
      panel.querySelector("textarea").dispatchEvent(new Event("input"));""",
           text=TEXTS[-1])
    time.sleep(0.2)
    state = wait_state(page, ".gpt2-live-tokenizer")
    assert json.loads(state["tokens"]) == gpt2_encoding().encode(TEXTS[-1], allowed_special="all")
    spans = run_js(page, "return document.querySelectorAll('.gpt2-live-tokens span').length;")
    assert spans == len(json.loads(state["tokens"]))
