"""The project's error types: a mistake the user can fix, as opposed to a bug.

Every error that `gpt2_core` raises for bad input (a file, a value, a configuration) is a
`GPT2CoreError`, so that the command line can tell such mistakes (one line, exit status 2) from
bugs (a traceback). Each kind also derives from the built-in exception it refines, so code that
catches `ValueError` or `RuntimeError` keeps working.
"""


class GPT2CoreError(Exception):
    """Bad input that the user can fix; the message names the file, line or value."""


class CheckpointError(GPT2CoreError, ValueError):
    """A checkpoint (training or Hugging Face layout) is missing, incomplete, corrupt, or does not
    fit the model."""


class ConfigError(GPT2CoreError, ValueError):
    """A configuration names an unknown key, has a value of the wrong type, or is invalid."""


class ExportError(GPT2CoreError, ValueError):
    """A model cannot be exported, or an exported file read back, as asked."""
