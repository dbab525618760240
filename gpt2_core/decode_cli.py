"""The command line's `generate` and `classify` commands (registered in `gpt2_core.cli`).

`generate` offers every strategy of chapter 5 through one `GenerationConfig`, which checks the
options once; on an instruction-tuned run (or with `--instruction`) it formats the prompt as
chapter 7 does and stops at the end of the response. `classify` prints chapter 6's label and
spam probability for each message given, or for each line of standard input.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from gpt2_core.arg_types import (any_float, fraction, non_negative_int, positive_float,
                                  positive_int, probability)
from gpt2_core.classifier import CLASSIFIER_KIND, GPTClassifier, load_classifier, pad_batch
from gpt2_core.errors import GPT2CoreError
from gpt2_core.generate import GenerationConfig, Int8Linear, quantize_model, stream
from gpt2_core.generate import generate as generate_ids
from gpt2_core.instruct import INSTRUCT_KIND, format_prompt
from gpt2_core.loading import load_model
from gpt2_core.runs import CLASSIFIER_DIR, Run, is_run
from gpt2_core.runtime import pick_device


class DecodeUsageError(GPT2CoreError, ValueError):
    """A generate or classify option, or a combination of them, that cannot work."""


DEVICE_HELP = "cpu, cuda, mps, ... (default: the best available)"
GENERATE_EXAMPLES = """examples:
  gpt2-core generate book --prompt "ROMEO:" --temperature 0.8 --top-k 40 --seed 1
  gpt2-core generate book --prompt "ROMEO:" --min-p 0.1 --repetition-penalty 1.3
  gpt2-core generate book --prompt "ROMEO:" --greedy --no-repeat-ngram-size 3
  gpt2-core generate book --prompt "ROMEO:" --num-beams 5 --length-penalty 1.5 --num-return-sequences 3
  gpt2-core generate runs/instruct --instruction "Rewrite in the plural." --input "The cat sleeps."
  gpt2-core generate gpt2 --prompt "The weather" --int8      # int8 weights on the CPU (chapter 5)
"""
CLASSIFY_EXAMPLES = """examples:
  gpt2-core classify runs/spam "WINNER!! Claim your prize now" "See you at 6?"
  cat messages.txt | gpt2-core classify runs/spam            # one message per line
"""




# --- generate ----------------------------------------------------------------------------------
def generate_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class, p.epilog = argparse.RawDescriptionHelpFormatter, GENERATE_EXAMPLES
    p.add_argument("model", help="'book', a model directory, a run directory, or an OpenAI size (gpt2, ...)")
    p.add_argument("--prompt", help="text to continue (default: start from end-of-text); on an "
                                    "instruction-tuned run, the instruction")
    p.add_argument("--instruction", help="format the prompt as chapter 7 does and print the response only")
    p.add_argument("--input", help="the instruction's input (with --instruction, or --prompt on an "
                                   "instruction-tuned run)")
    p.add_argument("--max-new-tokens", type=positive_int, default=100)
    s = p.add_argument_group("strategy (default: sampling at temperature 1)")
    s.add_argument("--greedy", action="store_true", help="always take the most likely token")
    s.add_argument("--num-beams", type=positive_int, default=1, help="beam search with this many beams "
                                                                     "(deterministic, printed at the end)")
    s.add_argument("--length-penalty", type=any_float, default=1.0,
                   help="beam search: scores are sum log p / length ** this (default: 1.0)")
    s.add_argument("--early-stopping", action="store_true",
                   help="beam search: stop once --num-beams hypotheses are finished")
    s.add_argument("--num-return-sequences", type=positive_int, default=1,
                   help="beam search: the n best; sampling: n samples")
    f = p.add_argument_group("sampling filters and penalties")
    f.add_argument("--temperature", type=positive_float, default=1.0)
    f.add_argument("--top-k", type=positive_int)
    f.add_argument("--top-p", type=probability)
    f.add_argument("--min-p", type=fraction)
    f.add_argument("--repetition-penalty", type=positive_float, default=1.0, help="1.0: off (any strategy)")
    f.add_argument("--no-repeat-ngram-size", type=non_negative_int, default=0, help="0: off (any strategy)")
    f.add_argument("--seed", type=int, help="seed of the sampler, for a reproducible text")
    p.add_argument("--int8", action="store_true", help="quantize every Linear layer's weights to int8 "
                                                       "(per output channel; CPU only)")
    p.add_argument("--device", help=DEVICE_HELP)


def prompt_text(args: argparse.Namespace, run: Run | None) -> tuple[str, bool]:
    """The text to continue, and whether it is chapter 7's instruction prompt."""
    instruct_run = run is not None and run.kind == INSTRUCT_KIND
    if args.instruction is not None and args.prompt is not None:
        raise DecodeUsageError("give --prompt or --instruction, not both")
    instruction = args.instruction if args.instruction is not None else (args.prompt if instruct_run else None)
    if instruction is None:
        if args.input is not None:
            raise DecodeUsageError("--input needs --instruction (or an instruction-tuned run and --prompt)")
        return args.prompt or "", False
    if not instruction.strip():
        raise DecodeUsageError("the instruction is empty")
    return format_prompt({"instruction": instruction, "input": args.input or ""}), True


def generation_config(args: argparse.Namespace, stop_tokens: tuple[int, ...]) -> GenerationConfig:
    """The options as one GenerationConfig, checked; a bad combination is a DecodeUsageError."""
    beams = args.num_beams > 1
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=not (args.greedy or beams),
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        num_beams=args.num_beams, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
        num_return_sequences=args.num_return_sequences, stop_tokens=stop_tokens, seed=args.seed,
        overflow="error" if beams else "slide")
    if args.greedy and beams:
        raise DecodeUsageError("--greedy and --num-beams > 1 are two strategies; pick one")
    try:
        return config.validate()
    except ValueError as e:
        raise DecodeUsageError(str(e)) from None


def _write_stream(prefix: str, pieces: Iterable[bytes]) -> None:
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
    sys.stdout.write(prefix)
    for piece in pieces:
        sys.stdout.write(utf8.decode(piece))
        sys.stdout.flush()
    sys.stdout.write(utf8.decode(b"", final=True) + "\n")


def generate(args: argparse.Namespace) -> None:
    """Continue a prompt with the chosen strategy, streaming the text when there is one sequence."""
    device = pick_device(args.device)
    if args.int8 and device.type != "cpu":
        raise DecodeUsageError(f"--int8 runs on the CPU only (got --device {device.type})")
    model, tokenizer, run = load_model(args.model, device)
    text, instructed = prompt_text(args, run)
    config = generation_config(args, (tokenizer.eot_token,) if instructed else ())
    if args.int8:
        model = quantize_model(model)
        n = sum(isinstance(m, Int8Linear) for m in model.modules())
        print(f"int8: the weights of all {n} Linear layers (the LM head too) quantized per output "
              "channel; embeddings and LayerNorms stay fp32", file=sys.stderr)
    ids = tokenizer.encode(text) or [tokenizer.eot_token]
    shown = "" if instructed else text          # an instruction run prints the response only
    try:
        if config.num_beams == 1 and config.num_return_sequences == 1:
            tokens = stream(model, ids, config=config)   # checks the prompt before printing
            _write_stream(shown, (tokenizer.decode_bytes([t]) for t in tokens if t not in config.stop_tokens))
            return
        out = generate_ids(model, ids, config=config)
    except ValueError as e:
        raise DecodeUsageError(str(e)) from None
    for i, seq in enumerate(out.sequences):
        if len(out.sequences) > 1:
            score = f" (score {out.scores[i]:.3f})" if out.scores is not None else ""
            print(f"--- {i + 1}{score}")
        _write_stream(shown, [tokenizer.decode_bytes([t for t in seq if t not in config.stop_tokens])])


# --- classify ----------------------------------------------------------------------------------
def classify_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class, p.epilog = argparse.RawDescriptionHelpFormatter, CLASSIFY_EXAMPLES
    p.add_argument("run", type=Path, help="a finetune-classifier run directory, or its classifier/ directory")
    p.add_argument("text", nargs="*", help="messages to classify (default: each line of standard input)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", help=DEVICE_HELP)


def classifier_directory(path: Path) -> Path:
    """The directory holding classifier.json: `path` itself or its classifier/ (a run)."""
    if is_run(path):
        run = Run.open(path)
        if run.kind != CLASSIFIER_KIND:
            raise DecodeUsageError(f"{path} is a {run.kind} run, not a {CLASSIFIER_KIND} run")
        path = path / CLASSIFIER_DIR
    if not (path / "classifier.json").is_file():
        raise DecodeUsageError(f"{path}: no classifier.json here; give a {CLASSIFIER_KIND} run directory "
                               "or its classifier/ directory")
    return path


@torch.inference_mode()
def spam_probabilities(classifier: GPTClassifier, tokenizer, texts: list[str]) -> list[tuple[str, float]]:
    """Each text's predicted label and the probability of its positive class (spam, or the last label)."""
    ids, lengths = pad_batch([tokenizer.encode(t) for t in texts], tokenizer.eot_token,
                             classifier.max_length, classifier.keep)
    device = next(classifier.parameters()).device
    probs = classifier(ids.to(device), lengths.to(device)).float().softmax(-1).cpu()
    positive = classifier.labels.index("spam") if "spam" in classifier.labels else len(classifier.labels) - 1
    return [(classifier.labels[int(p.argmax())], float(p[positive])) for p in probs]


def _messages(args: argparse.Namespace) -> Iterator[str]:
    if args.text:
        yield from args.text
    else:
        for line in sys.stdin:
            yield line.rstrip("\r\n")


def classify(args: argparse.Namespace) -> None:
    """Print `label<TAB>spam probability<TAB>message`, one line per message."""
    empty = [i + 1 for i, text in enumerate(args.text) if not text.strip()]
    if empty:
        raise DecodeUsageError(f"message {empty[0]} is empty: there is nothing to classify")
    directory = classifier_directory(args.run)
    classifier, tokenizer = load_classifier(directory)
    if tokenizer is None:
        raise DecodeUsageError(f"{directory}: the classifier was saved without its tokenizer")
    classifier.to(pick_device(args.device))
    batch: list[str] = []

    def flush() -> None:
        for text, (label, p) in zip(batch, spam_probabilities(classifier, tokenizer, batch)):
            print(f"{label}\t{p:.4f}\t{text}", flush=True)
        batch.clear()

    for text in _messages(args):
        if not text.strip():
            continue                                   # blank lines of standard input are skipped
        batch.append(text)
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
