"""Re-execute notebooks in place, keeping their outputs and ipywidgets state for the book."""

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int) -> float:
    """Run every cell of `path` from its own folder and save it back; return the seconds taken."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
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
