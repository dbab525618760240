"""Re-execute notebooks in place, keeping their outputs and ipywidgets state for the book."""

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run(path: Path, timeout: int, **options) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell of `path` in a new kernel, from its own folder; return the notebook and the seconds.

    `options` go to nbclient's NotebookClient (e.g. allow_errors=True, store_widget_state=True).
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}, **options)
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def execute(path: Path, timeout: int) -> float:
    """Run `path` and save it back with its outputs (streams merged) and widget state; return seconds."""
    nb, seconds = run(path, timeout, store_widget_state=True, coalesce_streams=True)
    nbformat.write(nb, path)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    args = parser.parse_args()
    total = 0.0
    for path in args.notebooks:
        seconds = execute(path, args.timeout)
        total += seconds
        print(f"{path}: {seconds:.0f} s", flush=True)
    print(f"all notebooks: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
