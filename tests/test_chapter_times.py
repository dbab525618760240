"""benchmarks.chapter_times runs every cell of each notebook, times it, and records failing cells."""

import json
import sys

import nbformat

from benchmarks import chapter_times


def test_times_every_notebook_and_names_failing_cells(tmp_path, monkeypatch):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]),
                   chapters / "01_fine.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 2. Broken"),
        nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'arithmetic'"),
        nbformat.v4.new_code_cell("print('the next cells still run')"),
    ]), chapters / "02_broken.ipynb")
    out = tmp_path / "times.json"
    monkeypatch.setattr(sys, "argv", ["chapter_times", "--out", str(out), "--timeout", "60",
                                      str(chapters / "01_fine.ipynb"), str(chapters / "02_broken.ipynb")])
    assert chapter_times.main() == 1
    result = json.loads(out.read_text())
    assert set(result["seconds"]) == {"01_fine", "02_broken"} and all(s > 0 for s in result["seconds"].values())
    assert result["errors"] == {"02_broken": ["cell 1: AssertionError: arithmetic"]}
    assert result["cache"] == "empty at the start" and result["device"].startswith(("CPU", "NVIDIA"))
