"""The book's performance page is generated from the saved benchmark results, never edited by hand.

It shows each measured figure and what it was measured against, never the benchmarks' internal
pass/fail thresholds (the "goal" field of a result, which the benchmarks check themselves).
"""

import importlib.util
import json
import re

from book_tools.nbexport import ROOT

spec = importlib.util.spec_from_file_location("performance_page", ROOT / "scripts" / "performance_page.py")
performance_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(performance_page)

PAGE = ROOT / "book" / "performance.md"
HEADER = "| figure | result | measured against |"


def table_rows(page: str) -> list[list[str]]:
    """The cells of every Markdown table row in `page` as text (no <wbr>), separator rows left out."""
    return [[cell.replace("<wbr>", "").strip() for cell in line.strip().strip("|").split("|")]
            for line in page.splitlines()
            if line.startswith("|") and not re.fullmatch(r"\|(\s*-+\s*\|)+", line.strip())]


def test_page_is_up_to_date():
    assert PAGE.read_text(encoding="utf-8") == performance_page.render()


def test_page_shows_every_saved_figure_with_its_reference():
    page = PAGE.read_text(encoding="utf-8")
    rows = table_rows(page)
    figures = [f for path in sorted((ROOT / "benchmarks" / "results").glob("*.json"))
               for f in json.loads(path.read_text(encoding="utf-8")).get("figures", [])]
    assert figures, "no saved figures found"
    missing = [f["metric"] for f in figures
               if [f["metric"], str(f["value"]), f["reference"]] not in rows]
    assert not missing, f"figures missing from {PAGE.name}: {missing}"


def test_page_has_no_internal_thresholds():
    page = PAGE.read_text(encoding="utf-8")
    words = sorted(set(re.findall(r"\b(?:goals?|targets?|met)\b", page, flags=re.IGNORECASE)))
    assert not words, f"{PAGE.name} speaks of {words}: show the measurement and its reference only"
    assert all(len(row) == 3 for row in table_rows(page)), f"a table is not {HEADER}"


def test_a_record_becomes_a_section_without_its_goal(tmp_path):
    record = {"benchmark": "demo", "date": "2026-01-02",
              "machine": {"cpu": "x86_64", "cores": 2, "torch_threads": 2, "torch": "2.13.0"},
              "figures": [{"metric": "speed, ours / theirs", "value": 1.5, "reference": "theirs",
                           "goal": ">= 1.25"}]}
    (tmp_path / "demo.json").write_text(json.dumps(record))
    page = performance_page.render(tmp_path)
    assert "## `benchmarks/demo.py`" in page
    assert "Measured 2026-01-02 on 2 CPU cores (x86_64)" in page
    assert f"{HEADER}\n|---|---|---|\n| speed, ours / theirs | 1.5 | theirs |\n" in page
    assert ">= 1.25" not in page


def test_a_gpu_is_named_and_chapter_times_are_left_to_the_landing_page(tmp_path):
    record = {"benchmark": "gpu_demo", "date": "2026-01-02",
              "machine": {"cpu": "x86_64", "cores": 16, "torch_threads": 16, "torch": "2.11.0", "gpu": "NVIDIA H200"},
              "figures": [{"metric": "flash attention runs", "value": True, "reference": "sdpa_kernel", "goal": "True"}]}
    (tmp_path / "gpu_demo.json").write_text(json.dumps(record))
    (tmp_path / "chapter_times_gpu.json").write_text(json.dumps({"device": "NVIDIA H200", "seconds": {}}))
    page = performance_page.render(tmp_path)
    assert "Measured 2026-01-02 on NVIDIA H200 and 16 CPU cores (x86_64)" in page
    assert "| flash attention runs | True | sdpa_kernel |\n" in page and "chapter_times" not in page


def test_long_names_may_break_after_dots_and_before_parentheses():
    assert (performance_page.breakable("torch.nn.attention.sdpa_kernel([FLASH_ATTENTION]), 2.5.1")
            == "torch.<wbr>nn.<wbr>attention.<wbr>sdpa_kernel<wbr>([FLASH_ATTENTION]), 2.5.1")
    assert performance_page.breakable("decode_layout() speed-up") == "decode_layout() speed-up"


def test_a_hand_written_note_follows_its_table(tmp_path):
    results, notes = tmp_path / "results", tmp_path / "notes"
    results.mkdir()
    notes.mkdir()
    record = {"benchmark": "demo", "date": "2026-01-02",
              "machine": {"cpu": "x86_64", "cores": 2, "torch_threads": 2, "torch": "2.13.0"},
              "figures": [{"metric": "speed", "value": 1.5, "reference": "theirs", "goal": ">= 1.25"}]}
    (results / "demo.json").write_text(json.dumps(record))
    (notes / "demo.md").write_text("\n### What the speed means\n\nIt is a ratio.\n")
    assert performance_page.render(results).endswith("| speed | 1.5 | theirs |\n\n### What the speed means\n\n"
                                                      "It is a ratio.\n")
