"""The book's performance page is generated from the saved benchmark results, never edited by hand."""

import importlib.util
import json

from gpt2_core.nbexport import ROOT

spec = importlib.util.spec_from_file_location("performance_page", ROOT / "scripts" / "performance_page.py")
performance_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(performance_page)


def test_page_is_up_to_date():
    assert (ROOT / "book" / "performance.md").read_text(encoding="utf-8") == performance_page.render()


def test_page_lists_every_figure(tmp_path):
    record = {"benchmark": "demo", "date": "2026-01-02",
              "machine": {"cpu": "x86_64", "cores": 2, "torch_threads": 2, "torch": "2.13.0"},
              "figures": [{"metric": "speed, ours / theirs", "value": 1.5, "reference": "theirs", "goal": ">= 1.0"}]}
    (tmp_path / "demo.json").write_text(json.dumps(record))
    page = performance_page.render(tmp_path)
    assert "## `benchmarks/demo.py`" in page and "| speed, ours / theirs | 1.5 | theirs | >= 1.0 | yes |" in page
    assert "Measured 2026-01-02 on 2 CPU cores (x86_64)" in page


def test_a_gpu_is_named_and_chapter_times_are_left_to_the_landing_page(tmp_path):
    record = {"benchmark": "gpu_demo", "date": "2026-01-02",
              "machine": {"cpu": "x86_64", "cores": 16, "torch_threads": 16, "torch": "2.11.0", "gpu": "NVIDIA H200"},
              "figures": [{"metric": "flash attention runs", "value": True, "reference": "sdpa_kernel", "goal": "True"}]}
    (tmp_path / "gpu_demo.json").write_text(json.dumps(record))
    (tmp_path / "chapter_times_gpu.json").write_text(json.dumps({"device": "NVIDIA H200", "seconds": {}}))
    page = performance_page.render(tmp_path)
    assert "Measured 2026-01-02 on NVIDIA H200 and 16 CPU cores (x86_64)" in page
    assert "| flash attention runs | True | sdpa_kernel | True |  |" in page and "chapter_times" not in page


def test_goals_are_checked():
    assert performance_page.met(1.84, ">= 2.0") == "**no**" and performance_page.met(2.0, ">= 2.0") == "yes"
    assert performance_page.met(0.9, "<= 0.93") == "yes" and performance_page.met(3, "> 1.0") == "yes"
    assert performance_page.met(0.5, "report") == "" and performance_page.met(0.5, "<= 300 s / <= 2.35") == ""
