"""Static checks: no undefined names or unused imports, in generated and hand-written code alike.

Exported modules are assembled from notebook cells, so a name that a cell borrowed from an earlier,
non-exported cell would only fail when the module is used on its own; pyflakes' rules catch that.
"""

import subprocess
import sys

from book_tools.nbexport import ROOT


def test_pyflakes_rules_pass():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F",
                             "gpt2_core", "tests", "benchmarks", "scripts"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
