"""Argument types for the command line: numbers checked as they are parsed, with one-line errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(kind: type, ok: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
probability = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
fraction = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
any_float = _number(float, lambda v: v == v, "a number")
