"""Run every benchmark in this folder, one after the other: `python -m benchmarks [--quick]`."""

import pkgutil
import subprocess
import sys
from pathlib import Path

SKIP = {"common", "chapter_times"}    # chapter_times times the notebooks for the landing page, not a ratio


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name not in SKIP and not m.name.startswith("_"))
    failed = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        if subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *sys.argv[1:]]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
