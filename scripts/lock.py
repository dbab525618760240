"""Print the constraints file: the exact versions installed in the current environment."""

import re
import subprocess
import sys

frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                        check=True, capture_output=True, text=True).stdout
print("# Exact versions for make, CI and the book build (pip constraints file).")
print("# pyproject.toml keeps ranges; regenerate this with: make lock")
for line in frozen.splitlines():
    # A local build label (torch==2.13.0+cpu) is dropped so that the pin matches any build.
    print(re.sub(r"^(torch==[^+]+)\+\S+$", r"\1", line))
