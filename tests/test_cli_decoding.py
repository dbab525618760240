"""`gpt2-core generate` (every chapter 5 strategy, chapter 7 prompts, int8) and `gpt2-core classify`,
on a tiny random model saved to disk: each command's output equals the library's, and each mistake is a
one-line error with exit status 2."""

import io
import sys
from pathlib import Path

import pytest
import torch

from gpt2_core.classifier import GPTClassifier, classify, save_classifier
from gpt2_core.cli import main
from gpt2_core.generate import generate, quantize_model
from gpt2_core.instruct import INSTRUCT_KIND, InstructConfig, format_prompt
from gpt2_core.model import GPT, GPTConfig, from_pretrained, save_pretrained
from gpt2_core.runs import Run
from gpt2_core.tokenizer import BPETokenizer

TEXT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request. The cat sat on the mat; the dog sat on the log. " * 4)


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 300)


def save_model(directory: Path, tokenizer: BPETokenizer) -> Path:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=128, n_layer=1, n_head=2, n_embd=16))
    save_pretrained(model, directory)
    tokenizer.save(directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_model(tmp_path_factory.mktemp("lm") / "model", tokenizer)


def run_ok(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def error_of(capsys, argv: list[str]) -> str:
    """Run argv, expect exit status 2, and return the one-line error message."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def library(model_dir: Path, tokenizer, prompt: str, **options) -> list[str]:
    model = from_pretrained(model_dir)
    out = generate(model, tokenizer.encode(prompt), **options)
    return [tokenizer.decode(seq) for seq in out.sequences]


@pytest.mark.parametrize("flags, options", [
    (["--greedy", "--no-repeat-ngram-size", "2"], dict(no_repeat_ngram_size=2)),
    (["--greedy", "--repetition-penalty", "1.5"], dict(repetition_penalty=1.5)),
    (["--min-p", "0.2", "--temperature", "0.7", "--seed", "4"],
     dict(do_sample=True, min_p=0.2, temperature=0.7, seed=4)),
    (["--top-k", "5", "--top-p", "0.9", "--seed", "1"], dict(do_sample=True, top_k=5, top_p=0.9, seed=1)),
])
def test_generate_strategies_match_the_library(model_dir, tokenizer, capsys, flags, options):
    prompt = "The cat"
    out = run_ok(capsys, ["generate", str(model_dir), "--prompt", prompt, "--max-new-tokens", "12", *flags])
    [expected] = library(model_dir, tokenizer, prompt, max_new_tokens=12, overflow="slide", **options)
    assert out == prompt + expected + "\n"


def test_generate_beam_search_prints_the_n_best(model_dir, tokenizer, capsys):
    argv = ["generate", str(model_dir), "--prompt", "The dog", "--max-new-tokens", "6", "--num-beams", "4",
            "--length-penalty", "0.5", "--num-return-sequences", "2", "--early-stopping"]
    out = run_ok(capsys, argv)
    texts = library(model_dir, tokenizer, "The dog", max_new_tokens=6, num_beams=4, length_penalty=0.5,
                    num_return_sequences=2, early_stopping=True)
    blocks = out.split("--- ")[1:]
    assert [b.startswith(f"{i + 1} (score ") for i, b in enumerate(blocks)] == [True, True]
    assert [b.split("\n", 1)[1] for b in blocks] == ["The dog" + t + "\n" for t in texts]


def test_generate_formats_instructions_as_chapter_7(model_dir, tokenizer, tmp_path, capsys):
    argv = ["generate", str(model_dir), "--instruction", "Name a colour.", "--input", "red or blue",
            "--max-new-tokens", "8", "--greedy"]
    prompt = format_prompt({"instruction": "Name a colour.", "input": "red or blue"})
    eot = tokenizer.eot_token
    [response] = library(model_dir, tokenizer, prompt, max_new_tokens=8, stop_tokens=(eot,), overflow="slide")
    assert run_ok(capsys, argv) == response.replace(tokenizer.decode([eot]), "") + "\n"
    # On an instruction-tuned run, --prompt is the instruction.
    run = Run.create(tmp_path / "instruct", INSTRUCT_KIND, InstructConfig(base="book"))
    save_model(run.model_dir, tokenizer)
    argv = ["generate", str(run.directory), "--prompt", "Name a colour.", "--input", "red or blue",
            "--max-new-tokens", "8", "--greedy"]
    assert run_ok(capsys, argv) == response.replace(tokenizer.decode([eot]), "") + "\n"


def test_generate_int8(model_dir, tokenizer, capsys):
    out = run_ok(capsys, ["generate", str(model_dir), "--prompt", "The", "--max-new-tokens", "6", "--greedy",
                          "--int8"])
    int8 = quantize_model(from_pretrained(model_dir))
    expected = tokenizer.decode(generate(int8, tokenizer.encode("The"), 6, overflow="slide").sequences[0])
    assert out == "The" + expected + "\n"


@pytest.mark.parametrize("flags, message", [
    (["--greedy", "--num-beams", "2"], "--greedy and --num-beams > 1 are two strategies"),
    (["--greedy", "--num-return-sequences", "2"], "greedy decoding returns one sequence per prompt"),
    (["--num-beams", "2", "--num-return-sequences", "3"], "num_return_sequences=3 > num_beams=2"),
    (["--input", "x"], "--input needs --instruction"),
    (["--prompt", "a", "--instruction", "b"], "give --prompt or --instruction, not both"),
    (["--num-beams", "2", "--max-new-tokens", "500"], "block_size=128"),
])
def test_generate_mistakes_are_one_line_errors(model_dir, capsys, flags, message):
    assert message in error_of(capsys, ["generate", str(model_dir), *flags])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, model_dir, tokenizer) -> Path:
    classifier = GPTClassifier(from_pretrained(model_dir), max_length=32).eval()
    return save_classifier(classifier, tmp_path_factory.mktemp("spam") / "classifier", tokenizer)


def parse(out: str) -> list[tuple[str, float, str]]:
    rows = [line.split("\t") for line in out.splitlines()]
    return [(label, float(p), text) for label, p, text in rows]


def test_classify_prints_label_and_spam_probability(classifier_dir, tokenizer, capsys, monkeypatch):
    from gpt2_core.classifier import load_classifier

    messages = ["WINNER!! Claim your prize", "See you at six?", "The cat sat on the mat"]
    rows = parse(run_ok(capsys, ["classify", str(classifier_dir), *messages]))
    classifier, _ = load_classifier(classifier_dir)
    assert [r[2] for r in rows] == messages
    assert [r[0] for r in rows] == classify(classifier, tokenizer, messages)
    assert all(0 <= p <= 1 and (label == "spam") == (p > 0.5) for label, p, _ in rows)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(messages[:2]) + "\n\n" + messages[2] + "\n"))
    assert parse(run_ok(capsys, ["classify", str(classifier_dir), "--batch-size", "2"])) == rows


def test_classify_mistakes_are_one_line_errors(classifier_dir, model_dir, capsys):
    assert "message 2 is empty" in error_of(capsys, ["classify", str(classifier_dir), "hi", " "])
    assert "no classifier.json here" in error_of(capsys, ["classify", str(model_dir), "hi"])
