"""Argument checks shared by every `gpt2_core.tokenizer.Tokenizer`, with clear error messages.

Hand-written plumbing for chapter 1: the `Tokenizer` base class calls these before it encodes
or decodes, so every implementation rejects the same mistakes with the same words. The rule
for special tokens is tiktoken's: a text that contains a special token's string is an error
unless the caller allows that token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def check_str(text: object) -> str:
    """`text` itself, or TypeError if it is not a str."""
    if not isinstance(text, str):
        raise TypeError(f"encode expects a str, got {type(text).__name__}: {text!r:.80}")
    return text


def check_texts(texts: object) -> None:
    """TypeError if `texts` is one str or bytes rather than a list of texts."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("encode_batch expects a list of str, got a single "
                        f"{type(texts).__name__}; use encode() for one text")


def allowed_set(allowed_special: str | Iterable[str], special_tokens: Mapping[str, int],
                name: str) -> frozenset[str]:
    """The special-token strings that `allowed_special` ("all" or a set) allows."""
    if allowed_special == "all":
        return frozenset(special_tokens)
    if isinstance(allowed_special, str):
        raise TypeError("allowed_special must be 'all' or a set of strings, got the string "
                        f"{allowed_special!r}; did you mean {{{allowed_special!r}}}?")
    allowed = frozenset(allowed_special)
    unknown = sorted(map(repr, allowed - special_tokens.keys()))
    if unknown:
        raise ValueError(f"unknown special token(s) {', '.join(unknown)}; "
                         f"{name} knows {sorted(special_tokens)}")
    return allowed


def check_text(text: object, allowed: frozenset[str], special_tokens: Mapping[str, int]) -> None:
    """TypeError if `text` is not a str; ValueError if it holds a special token not allowed."""
    check_str(text)
    for token, i in special_tokens.items():
        if token not in allowed and token in text:
            raise ValueError(
                f"text contains the special token {token!r}, which is not allowed here; pass "
                f"allowed_special={{{token!r}}} to encode it as id {i}, "
                "or use encode_ordinary() to encode it as plain text")


def check_ids(ids: object, vocab_size: int, name: str) -> list[int]:
    """`ids` (a sequence, tensor or array of ints) as a list, each checked to be a valid id."""
    if hasattr(ids, "tolist"):  # a torch tensor or NumPy array
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError("decode expects a sequence of int ids, got "
                        f"{type(ids).__name__}: {ids!r:.80}")
    ids = list(ids)
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"token ids must be int, got {type(i).__name__}: {i!r}")
        if not 0 <= i < vocab_size:
            raise ValueError(f"token id {i} is out of range for {name} "
                             f"(vocab_size {vocab_size})")
    return ids

