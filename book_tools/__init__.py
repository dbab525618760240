"""Tools that build the book from its notebooks; not part of the installed `gpt2_core` package."""
