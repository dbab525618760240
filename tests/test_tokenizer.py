"""Tokenizers: our byte-level BPE (trained, and with GPT-2's merges) against tiktoken's GPT-2."""

import functools
import json
from collections import Counter

import pytest
import regex
import tiktoken_ext.openai_public
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_core import data
from gpt2_core.tokenizer import (ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer, TiktokenTokenizer, Tokenizer,
                                 count_words, gpt2_bpe_files, gpt2_bytes_to_unicode, gpt2_tokenizer,
                                 train_merges)


@functools.cache
def ours_gpt2() -> BPETokenizer:
    return BPETokenizer.from_gpt2_files(*gpt2_bpe_files())


def both() -> list[Tokenizer]:
    return [ours_gpt2(), gpt2_tokenizer()]


# --- GPT-2 parity ------------------------------------------------------------------------------

def test_pattern_is_tiktokens_gpt2_pattern():
    assert GPT2_SPLIT_PATTERN == tiktoken_ext.openai_public.r50k_pat_str


def test_the_two_gpt2_tokenizers_have_the_same_vocabulary():
    ours, fast = both()
    assert ours.vocab_size == fast.vocab_size == 50257
    assert ours.special_tokens == fast.special_tokens == {ENDOFTEXT: 50256}
    assert ours.eot_token == fast.eot_token == 50256
    for i in range(ours.vocab_size):  # every id decodes to the same bytes
        assert ours.decode_bytes([i]) == fast.decode_bytes([i]), i


def book_data_text(book_text, name: str) -> str:
    """A registered data set's text, or the instruction data's fields joined as plain text."""
    if name != "instruction-data fields":
        return book_text(name)
    entries = json.loads(book_text("instruction-data"))
    return "\n\n".join(f"{e['instruction']}\n{e['input']}\n{e['output']}" for e in entries)


# The registry's plain-text files; an archive (a zipped corpus) holds many files, not one text.
TEXT_SETS = sorted(n for n, d in data.REGISTRY.items() if not d.filename.endswith(".zip"))


@pytest.mark.parametrize("name", TEXT_SETS + ["instruction-data fields"])
def test_our_bpe_with_gpt2_merges_equals_tiktoken_on_book_data(name, book_text):
    text = book_data_text(book_text, name)
    ours, fast = both()
    expected = fast.encode(text)
    got = ours.encode(text)
    assert len(got) == len(expected)
    first_difference = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    assert first_difference is None, f"{name}: first difference at token {first_difference}"
    assert ours.decode(got) == text


UNUSUAL = st.sampled_from(["😀", "👩‍👩‍👧", "🇫🇷", "日本語", "中文", "한국어", "e\u0301", "\u0300", "  ", "\t",
                           "\n\n", "\r\n", "\x00", "\x1b", "\u200b", "\ufeff", "'s", "'LL", " 123", "ﬁ",
                           "\U0010ffff", "\u00a0", ENDOFTEXT[:5], "<|", "|>"])
TEXTS = st.lists(st.one_of(st.text(max_size=12), UNUSUAL), max_size=12).map("".join)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(TEXTS)
def test_fuzz_round_trip_and_parity(text):
    ours, fast = both()
    ids = ours.encode(text)
    assert ids == fast.encode(text)
    assert ours.decode(ids) == text and fast.decode(ids) == text


@FUZZ
@given(st.lists(TEXTS, min_size=1, max_size=4))
def test_fuzz_special_tokens_inside_text(pieces):
    text = ENDOFTEXT.join(pieces)
    for tok in both():
        ids = tok.encode(text, allowed_special={ENDOFTEXT})
        assert tok.decode(ids) == text
        assert ids.count(tok.eot_token) == text.count(ENDOFTEXT)
        assert tok.encode_batch([text], allowed_special="all") == [ids]
        plain = tok.encode_ordinary(text)
        assert tok.eot_token not in plain and tok.decode(plain) == text
    assert both()[0].encode(text, allowed_special="all") == both()[1].encode(text, allowed_special="all")


def test_disallowed_special_token_is_an_error_like_tiktoken():
    text = f"one{ENDOFTEXT}two"
    with pytest.raises(ValueError):  # tiktoken's own rule
        gpt2_tokenizer().encoding.encode(text)
    for tok in both():
        with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*allowed_special"):
            tok.encode(text)
        with pytest.raises(ValueError, match="special token"):
            tok.encode_batch(["fine", text])


@pytest.mark.parametrize("call, error, message", [
    (lambda t: t.encode(b"bytes"), TypeError, "encode expects a str, got bytes"),
    (lambda t: t.encode(None), TypeError, "got NoneType"),
    (lambda t: t.encode(42), TypeError, "got int: 42"),
    (lambda t: t.encode("x", allowed_special={"<|pad|>"}), ValueError, r"unknown special token\(s\) '<\|pad\|>'"),
    (lambda t: t.encode("x", allowed_special=ENDOFTEXT), TypeError, "did you mean"),
    (lambda t: t.encode_batch("abc"), TypeError, "got a single str"),
    (lambda t: t.encode_batch(["ok", 3]), TypeError, "got int: 3"),
    (lambda t: t.decode([1, 50257]), ValueError, "token id 50257 is out of range"),
    (lambda t: t.decode([-1]), ValueError, "token id -1 is out of range"),
    (lambda t: t.decode(["a"]), TypeError, "token ids must be int, got str: 'a'"),
    (lambda t: t.decode([1.0]), TypeError, "got float: 1.0"),
    (lambda t: t.decode("abc"), TypeError, "decode expects a sequence of int ids, got str"),
])
@pytest.mark.parametrize("which", ["ours", "tiktoken"])
def test_bad_inputs_are_clear_errors(which, call, error, message):
    tok = ours_gpt2() if which == "ours" else gpt2_tokenizer()
    with pytest.raises(error, match=message):
        call(tok)


def test_decode_accepts_tensors_and_lone_surrogates_behave_like_tiktoken():
    import torch

    for tok in both():
        ids = tok.encode("hello world")
        assert tok.decode(torch.tensor(ids)) == "hello world"
    assert ours_gpt2().encode("a\ud800b") == gpt2_tokenizer().encode("a\ud800b")


def test_gpt2_byte_map_is_a_bijection_onto_printable_characters():
    mapping = gpt2_bytes_to_unicode()
    assert sorted(mapping) == list(range(256)) and len(set(mapping.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in mapping.values())
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("A")] == "A"


def test_gpt2_tokenizer_is_cached_and_files_exist():
    assert gpt2_tokenizer() is gpt2_tokenizer()
    assert isinstance(gpt2_tokenizer(), TiktokenTokenizer)
    encoder_json, vocab_bpe = gpt2_bpe_files()
    assert encoder_json.name == "encoder.json" and vocab_bpe.read_text(encoding="utf-8").startswith("#version")


def test_corrupt_gpt2_merges_file_names_file_and_line(tmp_path):
    encoder_json, vocab_bpe = gpt2_bpe_files()
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    lines[3] = "this line has three"
    bad = tmp_path / "vocab.bpe"
    bad.write_text("\n".join(lines[:10]), encoding="utf-8")
    with pytest.raises(ValueError, match=f"{regex.escape(str(bad))}, line 4: expected two tokens"):
        BPETokenizer.from_gpt2_files(encoder_json, bad)
    bad.write_text("#version: 0.2\nĠ zzzzqqq\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: token .* is not in"):
        BPETokenizer.from_gpt2_files(encoder_json, bad)


def test_gpt2_vocabulary_with_a_raw_byte_names_the_token(tmp_path):
    encoder_json, vocab_bpe = gpt2_bpe_files()
    encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    encoder["a\x00b"] = len(encoder)  # GPT-2 spells byte 0 as "Ā", never as a raw U+0000
    bad = tmp_path / "encoder.json"
    bad.write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError, match=r"token 'a\\x00b': '\\x00' is not one of GPT-2's byte"):
        BPETokenizer.from_gpt2_files(bad, vocab_bpe)


# --- training our own BPE ----------------------------------------------------------------------

def naive_merges(word_counts: dict[bytes, int], n_merges: int) -> list[tuple[int, int]]:
    """Reference BPE: recount every pair over every word after each merge."""
    words = {tuple(w): c for w, c in word_counts.items()}
    merges = []
    for k in range(n_merges):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new_words = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + count
        words = new_words
    return merges


@pytest.mark.parametrize("text", [
    "the-verdict",
    "aaaaaaa aaaa aaabaaab " * 20 + "ééé 日本日本日本",  # overlapping pairs and multi-byte characters
])
def test_incremental_training_equals_naive_recount(text, book_text):
    if text in data.REGISTRY:
        text = book_text(text)[:4000]
    counts = count_words(text)
    assert train_merges(counts, 120) == naive_merges(counts, 120)


@pytest.fixture(scope="module")
def trained(book_text) -> BPETokenizer:
    return BPETokenizer.train(book_text("the-verdict"), vocab_size=400)


def test_trained_bpe_shape_and_compression(trained, book_text):
    tok = trained
    text = book_text("the-verdict")
    assert tok.vocab_size == 400 and len(tok.merges) == 400 - 256 - 1
    assert tok.special_tokens == {ENDOFTEXT: 399} and tok.eot_token == 399
    for a, b, new in tok.merges:
        assert tok.vocab[new] == tok.vocab[a] + tok.vocab[b]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8")) / 1.5  # 143 merges: more than 1.5 bytes per token


def test_training_never_merges_across_special_tokens():
    tok = BPETokenizer.train(f"ab{ENDOFTEXT}ab{ENDOFTEXT}ab", vocab_size=258)
    assert [tok.vocab[new] for _, _, new in tok.merges] == [b"ab"]
    assert tok.encode(f"ab{ENDOFTEXT}", allowed_special="all") == [256, 257]


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("abc", vocab_size=1000, special_tokens=())
    assert [tok.vocab[new] for _, _, new in tok.merges] == [b"ab", b"abc"] and tok.vocab_size == 258


@FUZZ
@given(TEXTS)
def test_fuzz_trained_bpe_round_trip(trained, text):
    tok = trained
    assert tok.decode(tok.encode(text)) == text


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size must be at least 257"):
        BPETokenizer.train("abc", vocab_size=100)
    with pytest.raises(TypeError, match="train expects a str, got bytes"):
        BPETokenizer.train(b"abc", vocab_size=300)


def test_save_load_round_trip(tmp_path, trained, book_text):
    tok = trained
    path = tok.save(tmp_path / "verdict.bpe")
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.vocab == tok.vocab
    assert loaded.special_tokens == tok.special_tokens and loaded.pattern == tok.pattern
    text = book_text("the-verdict") + ENDOFTEXT + "日本 😀"
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_save_load_round_trip_of_gpt2(tmp_path, book_text):
    path = ours_gpt2().save(tmp_path / "gpt2.bpe")
    loaded = BPETokenizer.load(path)
    text = book_text("the-verdict")
    assert loaded.encode(text) == gpt2_tokenizer().encode(text)
    assert loaded.special_tokens == {ENDOFTEXT: 50256}


@pytest.mark.parametrize("edit, message", [
    (lambda lines: ["not a tokenizer"] + lines[1:], "line 1: expected the header"),
    (lambda lines: lines[:300] + ["merge 256 x 999"] + lines[301:], "line 301: cannot parse 'merge 256 x 999'"),
    (lambda lines: lines[:300] + ["merge 5000 1 999"] + lines[301:], "line 301: .*id 5000 is used before it is defined"),
    (lambda lines: lines[:3] + ["byte 300 7"] + lines[4:], "line 4: cannot parse"),
    (lambda lines: lines + ["colour blue"], r"line \d+: .*unknown record 'colour'"),
    (lambda lines: lines[:2] + ['pattern "unterminated'] + lines[3:], "line 3: cannot parse"),
    (lambda lines: lines[:3] + lines[4:], "vocab must hold all 256 single bytes"),
])
def test_corrupt_saved_file_names_file_and_line(tmp_path, trained, edit, message):
    path = trained.save(tmp_path / "t.bpe")
    path.write_text("\n".join(edit(path.read_text(encoding="utf-8").splitlines())) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{regex.escape(str(path))}.*{message}"):
        BPETokenizer.load(path)
