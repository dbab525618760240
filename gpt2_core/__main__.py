"""``python -m gpt2_core``: the command line of gpt2_core.cli."""

import sys

from gpt2_core.cli import main

sys.exit(main())
