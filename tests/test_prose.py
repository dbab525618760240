"""The chapters speak to the reader, and the figures their prose quotes are the ones they print.

1. A chapter's markdown explains what we build and what we measured. How the book is tested and
   written belongs on book/how_this_book_is_built.md, so wording about the test suite, budgets or
   "our trials" fails here, in every chapter.
2. A number quoted in the prose must be the number an output prints. Where that can be made
   mechanical, QUOTES pairs a phrase of a chapter's markdown with a regular expression that the
   chapter's outputs must match; re-executing a chapter that changes the figure breaks the pair.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.ipynb") if re.fullmatch(r"\d\d_\w+", p.stem))

# Wording about the book's own process, with what to do instead.
PROCESS_WORDS = {
    r"\btest[- ]?suites?\b": "say what the reader sees, not what the tests compare",
    r"\bnbval\b": "how cells are compared belongs on how_this_book_is_built.md",
    r"\bbudgets?\b": "say how long it takes on the reader's machine, not what it was allowed",
    r"\bin our (?:trials|runs|experiments)\b": "show the measurement, or say what the cell measured",
    r"\bwhatever we tried\b": "show what was tried, as a measurement",
    r"\bwhile writing (?:the|this) (?:chapter|book)\b": "speak about the reader's run, not the writing",
    r"\bwe have run it\b": "say what the reader can run",
    r"\bour target\b": "a target is the reader's, or the model's: say which",
    r"\bthe issue\b": "issues are the authors' bookkeeping; name the problem itself",
}

# (chapter, phrase of its markdown, regular expression its outputs must match).
QUOTES = [
    ("01_tokenization", "*The Verdict* is 20,479 bytes", r"(?m)^20,479 characters$"),
    ("01_tokenization", "against 4,690 naive word pieces", r"(?m)^4690 \['I', 'HAD'"),
    ("01_tokenization", "4,781 chunks, 1,256 distinct", r"4,781 chunks, 1,256 distinct"),
    ("01_tokenization", "(1.67 bytes per token)", r"vocab\s+384: 1\.670 bytes/token"),
    ("01_tokenization", "1.878 bytes per token", r"vocab\s+512: 1\.878 bytes/token"),
    ("01_tokenization", "(3.98 on *The Verdict*)", r"the-verdict\s+20,479\s+5,145\s+3\.98\s+True"),
    ("01_tokenization", "cost more (3.30)", r"tinyshakespeare\s+1,115,394\s+338,025\s+3\.30\s+True"),
    ("01_tokenization", "*The Verdict* has 5,145 GPT-2 tokens", r"5,145 tokens -> 1,285 windows"),
    ("01_tokenization", "(3,546 of 3,826 in *The Verdict*)",
     r"3,546 of the 3,826 words of The Verdict are one GPT-2 token \(93%\)"),
    ("01_tokenization", "For 93% of the words", r"one GPT-2 token \(93%\)"),
    ("01_tokenization", "719 of the 900 three-digit numbers", r"3-digit numbers \(900\), cut 3 ways: 3: 719,"),
    ("01_tokenization", "the four-digit numbers are cut in 5 different ways", r"4-digit numbers \(9,000\), cut 5 ways"),
    ("01_tokenization", "most often 2+2 digits (5,807 of them), then 1+3 (2,538), 3+1 (538) and whole (88)",
     r"4-digit numbers \(9,000\), cut 5 ways: 2\+2: 5,807, 1\+3: 2,538, 3\+1: 538, 4: 88"),
    ("01_tokenization", "In the 568,216 tokens of the book's texts the lone space occurs 30,378 times",
     r"568,216 tokens: the lone space \(id 220\) 30,378 times"),
    ("01_tokenization", "a letter or digit only 18 times", r"starting with a letter or digit 18 times"),
    ("01_tokenization", "Twenty of the 767 merged tokens", r"(?m)^20 of 767 merged tokens never occur"),
    ("01_tokenization", "id 43453, and never occurs", r"' SolidGoldMagikarp' -> \[43453\]: 0 times"),
    ("01_tokenization", "the English sentence takes 16 tokens (4.81 bytes per token)",
     r"(?m)^English\s+77\s+16\s+4\.81\s"),
    ("01_tokenization", "(Hindi: 99 tokens)", r"(?m)^Hindi\s+\d+\s+99\s"),
    ("01_tokenization", "16 tokens in English and 99 in Hindi", r"(?m)^Hindi\s+\d+\s+99\s"),
    ("02_attention", "fall from 0.867 to 0.358", r"unscaled 0\.867, scaled 0\.358"),
    ("02_attention", "no weight is more than 0.05 away from it", r"random heads 0\.0[0-4]\d, trained"),
    ("02_attention", "(0.36 and 0.33 against 0.12)",
     r"(?s)uniform average of the past: 0\.12 on each key.*\n\s+0\.0\s+0\.36 .*\n\s+0\.2\s+0\.33 "),
    ("02_attention", "a mean entropy of 1.79 against 2.38", r"mean entropy: random heads 2\.38, trained heads 1\.79"),
    ("02_attention", "head 0 of block 3, the last, puts about a third of its weight", r"\n\s+3\.0\s+0\.\d\d\s+0\.3\d "),
    ("03_gpt2_model", "exactly 124,439,808 parameters", r"gpt2 has 124,439,808 parameters"),
    ("03_gpt2_model", "0.85 GFLOP at 124M", r"(?m)^gpt2\s+124,439,808 .* 0\.854$"),
    ("03_gpt2_model", "its minimum is about $-0.17$ near $x = -0.75$", r"minimum -0\.1700 at x = -0\.75"),
    ("03_gpt2_model", r"$\ln 50257 = 10.82$", r"ln V = 10\.82"),
    ("03_gpt2_model", "the head size $d/h$ is 64 in all of them", r"(?m)^gpt2-xl .* head size=64$"),
    ("03_gpt2_model", "the output's standard deviation stays near 0.03 at every depth",
     r"(?m)^\s+24\s+\S+\s+\S+\s+(2\.[5-9]|3\.[0-4])e-02\s"),
    ("03_gpt2_model", "at 24 the output and the gradient are both more than ten orders of magnitude smaller",
     r"(?m)^\s+24\s+\d\.\de-02\s+\d\.\de-1[2-9]\s+\d\.\de-02\s+\d\.\de-1[2-9]$"),
]


def markdown_text(notebook: Path) -> str:
    """All markdown cells, with every run of whitespace folded into one space."""
    cells = nbformat.read(notebook, as_version=4).cells
    return " ".join(" ".join(c.source.split()) for c in cells if c.cell_type == "markdown")


def output_text(notebook: Path) -> str:
    """Everything the code cells print: streams, plain-text results and error messages."""
    parts = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "text" in output:
                parts.append(output["text"])
            parts.append(output.get("data", {}).get("text/plain", ""))
            if output.get("output_type") == "error":
                parts.append(f"{output['ename']}: {output['evalue']}")
    return "\n".join(parts)


def process_wording(notebook: Path) -> list[str]:
    """Each phrase of a chapter's markdown that talks about the book's process, with a hint."""
    text = markdown_text(notebook)
    problems = []
    for pattern, hint in PROCESS_WORDS.items():
        for match in re.finditer(pattern, text, re.IGNORECASE):
            context = text[max(0, match.start() - 50):match.end() + 30]
            problems.append(f"{notebook.name}: {match.group(0)!r} in '...{context}...': {hint}")
    return problems


def unmatched_quotes(notebook: Path, quotes: list[tuple[str, str, str]]) -> list[str]:
    """Each quote of `notebook` whose phrase is not in its prose or whose figure is not printed."""
    prose, printed = markdown_text(notebook), output_text(notebook)
    problems = []
    for chapter, phrase, pattern in quotes:
        if chapter != notebook.stem:
            continue
        if " ".join(phrase.split()) not in prose:
            problems.append(f"{notebook.name}: the prose no longer says {phrase!r}")
        elif not re.search(pattern, printed):
            problems.append(f"{notebook.name}: the prose says {phrase!r}, "
                            f"but no output matches {pattern!r}")
    return problems


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_prose_speaks_to_the_reader(notebook):
    problems = process_wording(notebook)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_quoted_figures_are_printed(notebook):
    problems = unmatched_quotes(notebook, QUOTES)
    assert not problems, "\n".join(problems)


def test_every_quote_names_a_chapter():
    stems = {p.stem for p in CHAPTERS}
    assert {chapter for chapter, _, _ in QUOTES} <= stems


def test_checks_on_a_sample(tmp_path):
    cells = [nbformat.v4.new_markdown_cell("## Results\n\nThe loss fell to\n2.31, as the\ntest-suite checks."),
             nbformat.v4.new_code_cell("print(loss)", outputs=[
                 nbformat.v4.new_output("stream", name="stdout", text="final loss 2.31\n")]),
             nbformat.v4.new_markdown_cell("Within our budget; the issue is open.")]
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    problems = process_wording(path)
    assert [re.search(r": '([^']+)' in '", p).group(1) for p in problems] == ["test-suite", "budget", "the issue"]
    assert "as the test-suite checks" in problems[0] and problems[0].startswith("09_demo.ipynb: ")
    quotes = [("09_demo", "fell to 2.31", r"final loss 2\.31"),
              ("09_demo", "fell to 2.40", r"final loss 2\.40"),
              ("09_demo", "fell to 2.31", r"final loss 2\.29"),
              ("08_other", "anything", r"nothing")]
    assert unmatched_quotes(path, quotes) == [
        "09_demo.ipynb: the prose no longer says 'fell to 2.40'",
        "09_demo.ipynb: the prose says 'fell to 2.31', but no output matches 'final loss 2\\\\.29'",
    ]


MODULE_ROW = re.compile(r"^\| (\d+) [^|]+\|[^|]+\| (.+) \|$")


def module_table(notebook: Path) -> dict[str, set[str]]:
    """Chapter number -> the modules that chapter 0's table says it promotes."""
    rows = {}
    for line in nbformat.read(notebook, as_version=4).cells[0].source.splitlines():
        match = MODULE_ROW.match(line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    return rows


def test_chapter_0_names_what_each_chapter_promotes():
    from book_tools import nbexport

    table = module_table(ROOT / "chapters" / "00_setup.ipynb")
    assert set(table) == {str(int(p.stem[:2])) for p in CHAPTERS}, "chapter 0's table needs a row per chapter"
    for path in CHAPTERS:
        exported = set(nbexport.render_modules([path], root=ROOT))
        assert table[str(int(path.stem[:2]))] == exported, f"chapter 0's table row for {path.stem}"
