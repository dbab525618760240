"""Chapter 10's GPT-2 124M recipe: its measured inputs come from the GPU benchmark's results, and the
README shows the command the chapter prints."""

import json
import re

import nbformat

from book_tools.nbexport import ROOT

CHAPTER = ROOT / "chapters" / "10_scaling.ipynb"


def recipe_cell() -> nbformat.NotebookNode:
    cells = [c for c in nbformat.read(CHAPTER, as_version=4).cells if "H200_TOKENS_PER_S =" in c.source]
    assert len(cells) == 1
    return cells[0]


def constant(source: str, name: str) -> float:
    return float(re.search(rf"^{name} = ([0-9_.e]+)", source, re.M).group(1).replace("_", ""))


def test_the_recipes_h200_figures_are_the_benchmarks():
    figures = {f["metric"]: f for f in json.loads(
        (ROOT / "benchmarks" / "results" / "gpu_training.json").read_text())["figures"]}

    def figure(start: str) -> dict:
        return next(f for name, f in figures.items() if name.startswith(start))

    bf16 = figure("training tokens/s, 124M, batch 16 x 1024, bf16")
    reference = float(re.search(r"\(([\d,]+) tokens/s\)", bf16["reference"]).group(1).replace(",", ""))
    measured = bf16["value"] * reference * figure("torch.compile speed-up")["value"]
    source = recipe_cell().source
    assert abs(constant(source, "H200_TOKENS_PER_S") / measured - 1) < 0.002
    peak = float(re.search(r"([\d.]+) TFLOP/s", figure("gpt2_core MFU")["reference"]).group(1)) * 1e12
    assert constant(source, "H200_BF16_PEAK") == peak


def test_the_readme_shows_the_command_the_chapter_prints():
    printed = "".join(o.get("text", "") for o in recipe_cell().outputs if o.get("output_type") == "stream")
    command = printed[printed.index("gpt2-core prepare"):].strip()
    assert command and command in (ROOT / "README.md").read_text()
