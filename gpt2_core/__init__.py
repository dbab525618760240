"""gpt2_core: the GPT-2 implementation that the book builds, one chapter at a time."""

__version__ = "0.1.0"
