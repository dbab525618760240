"""Wall time of every chapter on this machine, run top to bottom as a new reader would run it.

    python -m benchmarks.chapter_times --out benchmarks/results/chapter_times_gpu.json

Each notebook runs in a fresh kernel (nbclient), in reading order, and its outputs are thrown
away: the committed notebooks keep theirs. The model cache starts empty (a temporary
$GPT2_CORE_CACHE, unless --cache names one), so the first chapter that needs a model trains it
(chapter 2 the book's model, chapter 7 its 256-token variant), as on a reader's first run.
A failing cell does not stop its chapter.
The result is written after every chapter: the device, the seconds per chapter, and the errors
of any cell that failed (the exit status is then 1). `scripts/landing_page.py` shows the GPU
file next to the CPU times.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from scripts.execute_notebooks import run

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


def device_name() -> str:
    """The GPU's name, or the CPU with its core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU, {os.cpu_count()} cores"


def run_chapter(path: Path, timeout: int) -> tuple[float, list[str]]:
    """Execute every cell of `path` in a new kernel; return the seconds taken and the cells' errors."""
    nb, seconds = run(path, timeout, allow_errors=True)
    errors = [f"cell {i}: {o['ename']}: {o['evalue']}"[:1000] for i, cell in enumerate(nb.cells)
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    return seconds, errors


def run_all(args: argparse.Namespace) -> int:
    """Run the chapters, writing args.out after each; 1 if any cell failed."""
    result = {"device": device_name(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "cpu_cores": os.cpu_count(), "cache": "given" if args.cache else "empty at the start",
              "seconds": {}, "errors": {}}
    for path in args.chapters or sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb")):
        seconds, errors = run_chapter(path, args.timeout)
        result["seconds"][path.stem] = round(seconds, 1)
        if errors:
            result["errors"][path.stem] = errors
        print(f"{path.stem}: {seconds:.0f} s" + "".join(f"\n  {e}" for e in errors), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".part")
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, args.out)
    return 1 if result["errors"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--cache", type=Path, help="model cache to use (default: a new, empty one)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    parser.add_argument("chapters", nargs="*", type=Path, help="notebooks (default: all chapters)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpt2-core-cache-") as empty:
        os.environ["GPT2_CORE_CACHE"] = str(args.cache or empty)
        return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
