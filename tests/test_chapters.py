"""Every chapter has the same frame: Goals first; Summary, Exercises and "What we promoted into
gpt2_core" at the end, in that order. The promoted section is checked against the notebook's
export markers, so it cannot drift from what the chapter really puts into the package.
Every figure (a code cell with an image output) carries a caption and an alt text for the book.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest

from book_tools import nbexport

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.ipynb") if re.fullmatch(r"\d\d_\w+", p.stem))
GOALS, SUMMARY, EXERCISES = "Goals", "Summary", "Exercises"
PROMOTED = "What we promoted into `gpt2_core`"
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})")
BULLET = re.compile(r"^\* `gpt2_core\.(\w+)`:(.*)$")
NAME = re.compile(r"`([A-Za-z_]\w*)`")


def markdown_lines(notebook: Path) -> list[tuple[str, bool]]:
    """The lines of all markdown cells, each with whether it lies inside a fenced block."""
    out = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        fence = None                                  # a fence never spans cells
        for line in cell.source.splitlines():
            match = FENCE.match(line)
            if fence is None:
                fence = match.group(1) if match else None
                out.append((line, fence is not None))
                continue
            out.append((line, True))
            closing = match and line.strip() == match.group(1)
            if closing and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
        out.append(("", False))
    return out


def sections(notebook: Path) -> list[tuple[str, str]]:
    """(title, body) of every level-2 section, in order; the body runs to the next level-1/2 heading."""
    out: list[tuple[str, list[str]]] = []
    for line, fenced in markdown_lines(notebook):
        match = None if fenced else HEADING.match(line)
        if match and len(match.group(1)) <= 2:
            out.append((match.group(2) if len(match.group(1)) == 2 else "", []))
        elif out:
            out[-1][1].append(line)
    return [(title, "\n".join(body)) for title, body in out if title]


def section(notebook: Path, title: str) -> str:
    """The body of the one section called `title`."""
    bodies = [body for t, body in sections(notebook) if t == title]
    assert len(bodies) == 1, f"{notebook.name}: expected one '## {title}' section, found {len(bodies)}"
    return bodies[0]


def defined_names(source: str) -> set[str]:
    """Top-level names a module defines itself (functions, classes, assignments), not imports."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def public_functions_and_classes(source: str) -> set[str]:
    """Top-level functions and classes whose names do not start with an underscore."""
    return {node.name for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not node.name.startswith("_")}


def promoted_claims(body: str) -> dict[str, list[str]]:
    """Module -> names, from the bullets "* `gpt2_core.MODULE`: `name`, ..." (continuation lines indented)."""
    claims: dict[str, list[str]] = {}
    current = None
    for line in body.splitlines():
        match = BULLET.match(line)
        if match:
            current = match.group(1)
            assert current not in claims, f"gpt2_core.{current} is listed twice"
            claims[current] = NAME.findall(match.group(2))
        elif current is not None and line.startswith("  "):
            claims[current] += NAME.findall(line)
        else:
            current = None
    return claims


REMOVED_OUTPUT = {"remove-output", "remove_output", "remove-cell", "remove_cell"}


def figure_problems(notebook: Path) -> list[str]:
    """What each figure lacks: myst-nb renders a code cell's image outputs with the cell metadata
    {"mystnb": {"figure": {"caption": ...}, "image": {"alt": ...}}} as a captioned <figure>
    around an <img alt=...>. Cells whose outputs the book removes are not figures."""
    problems = []
    for index, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        if cell.cell_type != "code" or REMOVED_OUTPUT & set(cell.metadata.get("tags", [])):
            continue
        if not any(mime.startswith("image/") for output in cell.get("outputs", [])
                   for mime in output.get("data", {})):
            continue
        mystnb = cell.metadata.get("mystnb", {})
        for key, option in (("figure", "caption"), ("image", "alt")):
            value = mystnb.get(key, {}).get(option, "")
            if not (isinstance(value, str) and value.strip()):
                problems.append(f"{notebook.name}: cell {index} has an image output but no "
                                f"mystnb.{key}.{option} in its metadata")
    return problems


def test_there_are_chapters():
    assert len(CHAPTERS) >= 6


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_frame_sections_in_order(notebook):
    titles = [t for t, _ in sections(notebook)]
    assert titles and titles[0] == GOALS, f"{notebook.name}: the first section must be '## {GOALS}', got {titles[:1]}"
    for title in (GOALS, SUMMARY, EXERCISES, PROMOTED):
        assert titles.count(title) == 1, f"{notebook.name}: expected one '## {title}', found {titles.count(title)}"
    positions = [titles.index(t) for t in (GOALS, SUMMARY, EXERCISES, PROMOTED)]
    assert positions == sorted(positions), f"{notebook.name}: sections out of order: {titles}"
    assert titles[-1] == PROMOTED, f"{notebook.name}: '## {PROMOTED}' must close the chapter"
    goals = [line for line in section(notebook, GOALS).splitlines() if line.startswith("* ")]
    assert len(goals) >= 2, f"{notebook.name}: the goals should be a bullet list"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_exercises_have_hidden_solutions(notebook):
    body = section(notebook, EXERCISES)
    events = re.findall(r"^\*\*Exercise (\d+)|^(`{3,}|:{3,})\{admonition\} Solution\n:class: dropdown$",
                        body, re.MULTILINE)
    numbers = [int(n) for n, _ in events if n]
    assert 3 <= len(numbers) and numbers == list(range(1, len(numbers) + 1)), \
        f"{notebook.name}: exercises must be numbered 1..n with n >= 3, got {numbers}"
    kinds = ["exercise" if n else "solution" for n, _ in events]
    assert kinds == ["exercise", "solution"] * len(numbers), \
        f"{notebook.name}: every exercise needs one folded solution (```{{admonition}} Solution + :class: dropdown)"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_promoted_section_matches_the_export(notebook):
    body = section(notebook, PROMOTED)
    claims = promoted_claims(body)
    modules = nbexport.render_modules([notebook], root=ROOT)
    assert set(claims) == set(modules), (f"{notebook.name}: the section lists {sorted(claims)}, "
                                         f"the notebook exports {sorted(modules)}")
    for module, names in claims.items():
        defined = defined_names(modules[module])
        assert names, f"{notebook.name}: list the public names of gpt2_core.{module}"
        assert set(names) <= defined, f"gpt2_core.{module} does not define {sorted(set(names) - defined)}"
        missing = public_functions_and_classes(modules[module]) - set(names)
        assert not missing, f"{notebook.name}: gpt2_core.{module} also exports {sorted(missing)}; list them"
    for module in re.findall(r"`gpt2_core\.(\w+)`", body):
        assert (ROOT / "gpt2_core" / f"{module}.py").is_file(), f"{notebook.name}: no module gpt2_core.{module}"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_figures_have_caption_and_alt_text(notebook):
    problems = figure_problems(notebook)
    assert not problems, "\n".join(problems)


def test_parsers_on_a_sample(tmp_path):
    cells = [nbformat.v4.new_markdown_cell("# 9. Demo\n\nIntro.\n\n## Goals\n\n* one\n* two"),
             nbformat.v4.new_code_cell("#| export demo\ndef double(x):\n    return 2 * x\n\nK = 3"),
             nbformat.v4.new_markdown_cell("## Summary\n\n* done"),
             nbformat.v4.new_markdown_cell("## Exercises\n\n**Exercise 1: a.** Do it.\n\n"
                                           "````{admonition} Solution\n:class: dropdown\n\n```python\n"
                                           "# not a heading\n```\n````\n"),
             nbformat.v4.new_markdown_cell(f"## {PROMOTED}\n\n* `gpt2_core.demo`: `double`,\n  `K`.")]
    path = tmp_path / "chapters" / "09_demo.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    assert [t for t, _ in sections(path)] == [GOALS, SUMMARY, EXERCISES, PROMOTED]
    assert "# not a heading" in section(path, EXERCISES)
    assert promoted_claims(section(path, PROMOTED)) == {"demo": ["double", "K"]}
    source = nbexport.render_modules([path], root=tmp_path)["demo"]
    assert defined_names(source) == {"double", "K"} and public_functions_and_classes(source) == {"double"}


def test_figure_check_on_a_sample(tmp_path):
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    figure = nbformat.v4.new_output("display_data", data=png)
    text = nbformat.v4.new_output("stream", name="stdout", text="no figure\n")
    described = {"mystnb": {"figure": {"caption": "A plot."}, "image": {"alt": "Line chart."}}}
    cells = [nbformat.v4.new_code_cell("plot()", outputs=[figure], metadata=described),
             nbformat.v4.new_code_cell("print()", outputs=[text]),
             nbformat.v4.new_code_cell("plot()", outputs=[figure], metadata={"tags": ["remove-output"]}),
             nbformat.v4.new_code_cell("plot()", outputs=[text, figure]),
             nbformat.v4.new_code_cell("plot()", outputs=[figure],
                                       metadata={"mystnb": {"figure": {"caption": " "}, "image": {"alt": "x"}}})]
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    assert figure_problems(path) == [
        "09_demo.ipynb: cell 3 has an image output but no mystnb.figure.caption in its metadata",
        "09_demo.ipynb: cell 3 has an image output but no mystnb.image.alt in its metadata",
        "09_demo.ipynb: cell 4 has an image output but no mystnb.figure.caption in its metadata",
    ]


IGNORED = "nbval-ignore-output"
TIMING = re.compile(r"perf_counter|_seconds\b|environment_report|configure_threads")


def unasserted_ignored_cells(notebook: Path) -> list[str]:
    """Cells nbval does not compare that neither assert a claim nor only report time or machine."""
    problems = []
    for index, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        if "NBVAL_IGNORE_OUTPUT" in cell.source:
            problems.append(f"{notebook.name}: cell {index} uses the comment marker; tag it {IGNORED!r}")
        if IGNORED in cell.metadata.get("tags", []):
            if "assert " not in cell.source and not TIMING.search(cell.source):
                problems.append(f"{notebook.name}: cell {index} is not compared by nbval and asserts nothing")
    return problems


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_uncompared_cells_assert_their_claims(notebook):
    problems = unasserted_ignored_cells(notebook)
    assert not problems, "\n".join(problems)


def test_uncompared_cell_check_on_a_sample(tmp_path):
    cells = [nbformat.v4.new_code_cell("print(loss)\nassert loss < 3", metadata={"tags": [IGNORED]}),
             nbformat.v4.new_code_cell("print(f'{time.perf_counter() - t0:.0f} s')", metadata={"tags": [IGNORED]}),
             nbformat.v4.new_code_cell("print(loss)", metadata={"tags": [IGNORED]}),
             nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\nprint(loss)\nassert loss < 3"),
             nbformat.v4.new_code_cell("print(loss)")]
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    assert unasserted_ignored_cells(path) == ["09_demo.ipynb: cell 2 is not compared by nbval and asserts nothing",
                                              "09_demo.ipynb: cell 3 uses the comment marker; tag it 'nbval-ignore-output'"]


FOLDED = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
LONGEST_VISIBLE_CELL = 60


def long_visible_cells(notebook: Path, limit: int = LONGEST_VISIBLE_CELL) -> list[str]:
    """Code cells a reader sees unfolded that are longer than `limit` lines (markers not counted)."""
    problems = []
    for index, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        if cell.cell_type != "code" or FOLDED & set(cell.metadata.get("tags", [])):
            continue
        lines = [line for line in cell.source.splitlines() if not nbexport.MARKER.match(line)]
        if len(lines) > limit:
            problems.append(f"{notebook.name}: cell {index} shows {len(lines)} lines "
                            f"(fold it with 'hide-input' or split it)")
    return problems


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_visible_code_cells_fit_a_screen(notebook):
    problems = long_visible_cells(notebook)
    assert not problems, "\n".join(problems)


def test_long_cell_check_on_a_sample(tmp_path):
    long = "\n".join(f"x{i} = {i}" for i in range(61))
    cells = [nbformat.v4.new_code_cell(long),
             nbformat.v4.new_code_cell(long, metadata={"tags": ["hide-input"]}),
             nbformat.v4.new_code_cell("#| export demo\n" + "\n".join(long.splitlines()[:60]))]
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    assert long_visible_cells(path) == [
        "09_demo.ipynb: cell 0 shows 61 lines (fold it with 'hide-input' or split it)"]


TIMED = re.compile(r"perf_counter|process_time|monotonic|time\(\)|\w*seconds\w*|elapsed\w*|"
                   r"wall\w*|\w+_s")


def is_time(node: ast.AST) -> bool:
    """`node` reads a clock or a variable named like a duration (strings do not count)."""
    names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
             if isinstance(n, (ast.Name, ast.Attribute))]
    return any(TIMED.fullmatch(name) or TIMED.fullmatch(name + "()") for name in names)


def bounds_a_time(compare: ast.Compare) -> bool:
    """`compare` orders a time against a bound other than zero (`t < 60`, `limit > elapsed`)."""
    operands = [compare.left, *compare.comparators]
    for op, left, right in zip(compare.ops, operands, operands[1:]):
        if not isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            continue
        for time_side, other in ((left, right), (right, left)):
            zero = isinstance(other, ast.Constant) and other.value == 0
            if is_time(time_side) and not zero:
                return True
    return False


def timed_assertions(source: str) -> list[str]:
    """The `assert` statements of `source` that hold a time to a limit."""
    return [ast.unparse(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assert)
            and any(isinstance(c, ast.Compare) and bounds_a_time(c) for c in ast.walk(node.test))]


def notebook_code(notebook: Path) -> list[tuple[int, str]]:
    """(index, source) of each code cell, IPython magics left out so that `ast` can parse it."""
    cells = nbformat.read(notebook, as_version=4).cells
    return [(i, "\n".join(line for line in c.source.splitlines()
                          if not line.lstrip().startswith(("%", "!"))))
            for i, c in enumerate(cells) if c.cell_type == "code"]


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_no_cell_asserts_on_time(notebook):
    """Time depends on the machine and its load: cells print it and never assert on it."""
    problems = [f"{notebook.name}: cell {i}: {a}"
                for i, source in notebook_code(notebook) for a in timed_assertions(source)]
    assert not problems, "\n".join(problems)


def test_no_test_asserts_on_time():
    problems = [f"{path.name}: {a}" for path in sorted((ROOT / "tests").rglob("test_*.py"))
                for a in timed_assertions(path.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


def test_timed_assertion_check_on_a_sample():
    source = ("assert train_seconds < 60\nassert loss < 3\nassert elapsed_s >= 0\n"
              "assert time.perf_counter() - t0 < 5\nassert 300 > cpu_seconds / threads\n"
              "assert sorted(elapsed) == elapsed")
    assert timed_assertions(source) == ["assert train_seconds < 60",
                                        "assert time.perf_counter() - t0 < 5",
                                        "assert 300 > cpu_seconds / threads"]


# What chapter 10 (scaling) and the hand-written gpt2_core.layout (CPU kernels) own: the lessons of
# chapter 4 (the training loop) and chapter 5 (decoding) hold none of it in their code.
SCALING_CODE = re.compile(r"DistributedDataParallel|no_sync|all_reduce|torch\.autocast|torch\.compile\("
                          r"|WindowReader|\bShards\b|MKL_|split_inputs|TunedLinear|DecodeLinear")


def scaling_code(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    return [f"{notebook.name}: cell {i}: {m.group(0)}" for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" for m in SCALING_CODE.finditer(cell.source)]


@pytest.mark.parametrize("stem", ["04_pretraining", "05_decoding"])
def test_training_and_decoding_chapters_hold_no_scaling_or_kernel_code(stem):
    assert not scaling_code(ROOT / "chapters" / f"{stem}.ipynb")


def test_scaling_code_check_on_a_sample(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("net = DistributedDataParallel(model)"),
                nbformat.v4.new_code_cell("x = 1  # nothing to see")]
    path = tmp_path / "sample.ipynb"
    nbformat.write(nb, path)
    assert scaling_code(path) == ["sample.ipynb: cell 0: DistributedDataParallel"]
    assert scaling_code(ROOT / "chapters" / "10_scaling.ipynb")      # where it lives
