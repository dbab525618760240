"""Write book/performance.md from benchmarks/results/*.json, each table followed by its hand-written
benchmarks/notes/<benchmark>.md if there is one (`--check`: fail if the page is out of date)."""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "book" / "performance.md"

INTRO = """# Performance

Every figure below is printed by a script in `benchmarks/` (`make bench`, or
`python -m benchmarks.<name>`), which measures our code and its reference **in the same run on the
same machine**, so each ratio holds even when the absolute speeds differ from your machine's. A
figure written `a / b` is the ratio of the two measurements; the last column names what each figure
was measured against. This page is generated from the scripts' saved results by
`scripts/performance_page.py`.
"""


def breakable(text: str) -> str:
    """`text` with a line-break opportunity (<wbr>) after the dots and before the parentheses of
    each long name, such as torch.nn.attention.sdpa_kernel([FLASH_ATTENTION]), so that a narrow
    table column can wrap it."""
    return re.sub(r"\S{24,}", lambda name: re.sub(r"(?<=\.)(?=\w)|(?=\()", "<wbr>", name.group()),
                  text)


def render(results_dir: Path = RESULTS) -> str:
    """The page's Markdown, one section per benchmark."""
    parts = [INTRO]
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if "figures" not in record:           # chapter_times_*.json: the landing page shows those
            continue
        m = record["machine"]
        gpu = f"{m['gpu']} and " if "gpu" in m else ""
        parts.append(f"\n## `benchmarks/{record['benchmark']}.py`\n\n"
                     f"Measured {record['date']} on {gpu}{m['cores']} CPU cores ({m['cpu']}), "
                     f"{m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''}, "
                     f"torch {m['torch']}.\n\n"
                     "| figure | result | measured against |\n|---|---|---|\n")
        parts += [f"| {breakable(f['metric'])} | {f['value']} | {breakable(f['reference'])} |\n"
                  for f in record["figures"]]
        note = results_dir.parent / "notes" / f"{record['benchmark']}.md"
        if note.is_file():                    # what the figures mean, written by hand
            parts.append(note.read_text(encoding="utf-8"))
    return "".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python scripts/performance_page.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
