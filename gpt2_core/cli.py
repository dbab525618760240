"""The command line: ``gpt2-core COMMAND`` or ``python -m gpt2_core COMMAND``.

    gpt2-core pretrain --out runs/book                      # the book's recipe (chapter 4)
    gpt2-core pretrain --config tiny.json --max-steps 500 --checkpoint-interval 100 --out runs/tiny
    gpt2-core pretrain --config tiny.json --max-steps 500 --checkpoint-interval 100 --out runs/tiny --resume
    gpt2-core generate runs/tiny --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --seed 1
    gpt2-core evaluate runs/tiny the-verdict                # a registered data set or a text file
    gpt2-core export runs/tiny exported/tiny                # loads in transformers.GPT2LMHeadModel

Each command is a `Command` in `COMMANDS`, registered with the `command` decorator: a new one is a
function adding its arguments and a function running it. Mistakes a user can fix (bad paths,
values, config files) end with exit status 2 and a one-line message on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import codecs
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gpt2_core import __version__, data
from gpt2_core import checkpoint as checkpoint_module
from gpt2_core import model as model_module
from gpt2_core.generate import GenerationConfig, stream
from gpt2_core.model import GPT, GPT2_SIZES, from_pretrained
from gpt2_core.pretrained import BOOK_RECIPE, Recipe, prepare_corpus
from gpt2_core.runs import (
    CARD_FILE,
    TOKENIZER_FILE,
    ConfigError,
    Run,
    RunError,
    config_from_dict,
    export_model,
    is_run,
    model_card,
    read_json,
)
from gpt2_core.runtime import pick_device, seed_everything
from gpt2_core.tokenizer import BPETokenizer, Tokenizer, gpt2_tokenizer
from gpt2_core.train import TrainConfig, evaluate, train

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


class UsageError(Exception):
    """A mistake in the command line or the files it names."""


USER_ERRORS = (UsageError, RunError, ConfigError, data.DataError, model_module.CheckpointError,
               checkpoint_module.CheckpointError, ValueError, OSError)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, and functions adding its arguments and running it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """Decorator registering the decorated function as subcommand `name`."""
    def register(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run
    return register


# --- argument types ----------------------------------------------------------------------------
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


# --- models, tokenizers and texts --------------------------------------------------------------
def load_model(source: str, device: torch.device) -> tuple[GPT, Tokenizer, Run | None]:
    """The model, tokenizer and (for a run directory) run named by `source`.

    `source` is a model directory (config.json + model.safetensors + tokenizer.json), a run
    directory (its exported model/), or an OpenAI size ("gpt2", ...). Pickled weights are refused.
    """
    path, run = Path(source), None
    if is_run(path):
        run = Run.open(path)
        path = run.model_dir
        if not path.is_dir():
            raise UsageError(f"run {run.directory} has no model yet; finish it with `pretrain --resume` "
                             f"or write its newest checkpoint out with `export`")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise UsageError(f"refusing to load {path}: pickled weights can run arbitrary code; "
                             "give a directory with model.safetensors")
        raise UsageError(f"{path} is a file; give a model directory (config.json + model.safetensors)")
    if not path.is_dir():
        if source in GPT2_SIZES:
            return from_pretrained(source).to(device), gpt2_tokenizer(), None
        raise UsageError(f"{path}: no such model directory, run directory or model name "
                         f"({', '.join(GPT2_SIZES)})")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not (path / "model.safetensors").is_file():
        raise UsageError(f"{path}: refusing to load pickled weights ({', '.join(pickles)}); "
                         "gpt2_core loads only model.safetensors")
    model = from_pretrained(path).to(device)
    return model, load_tokenizer(path, model.config.vocab_size), run


def load_tokenizer(directory: Path, vocab_size: int) -> Tokenizer:
    """The model directory's tokenizer.json, or GPT-2's tokenizer for a 50,257-token model without one."""
    file = directory / TOKENIZER_FILE
    if file.is_file():
        tokenizer = BPETokenizer.load(file)
    elif vocab_size == gpt2_tokenizer().vocab_size:
        tokenizer = gpt2_tokenizer()
    else:
        raise UsageError(f"{directory} has no {TOKENIZER_FILE}, and its vocabulary ({vocab_size}) is not GPT-2's")
    if tokenizer.vocab_size > vocab_size:
        raise UsageError(f"{file}: {tokenizer.vocab_size} token ids do not fit the model's vocabulary ({vocab_size})")
    return tokenizer


def read_text(source: str) -> str:
    """The text of file `source`, or of registered data set `source`."""
    path = Path(source)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if source in data.REGISTRY:
        return data.fetch(source).read_text(encoding="utf-8")
    raise UsageError(f"{source!r} is neither a file nor a registered data set ({', '.join(sorted(data.REGISTRY))})")


def score(model: GPT, ids: np.ndarray, chars: int, block_size: int, *, batch_size: int = 32,
          desc: str = "evaluate") -> dict:
    """Loss per token (nats), perplexity and bits per character of token ids `ids` covering `chars`.

    Consecutive windows of `block_size` tokens, as train.evaluate (which scores each chunk).
    """
    if block_size > model.config.block_size:
        raise UsageError(f"block size {block_size} is longer than the model's context ({model.config.block_size})")
    chunk = block_size * batch_size * 8                 # windows per progress-bar tick
    total, count = 0.0, 0
    for start in tqdm(range(0, len(ids) - 1, chunk), desc=desc, unit="chunk", disable=None):
        chunk_total, chunk_count = evaluate(model, ids[start:start + chunk + 1], block_size, batch_size)
        total, count = total + chunk_total, count + chunk_count
    loss = total / count
    return {"tokens": count, "characters": chars, "loss": loss, "perplexity": math.exp(loss),
            "bits_per_char": total / chars / math.log(2)}


# --- pretrain ----------------------------------------------------------------------------------
def load_recipe(path: Path | None, base: Recipe = BOOK_RECIPE) -> Recipe:
    """`base` with the fields of JSON file `path` replaced (nested "model" and "train" objects)."""
    if path is None:
        return base
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    recipe = config_from_dict(base, read_json(path), source=str(path))
    if recipe.model.vocab_size < recipe.vocab_size:
        raise ConfigError(f"{path}: model.vocab_size={recipe.model.vocab_size} is smaller than the "
                          f"tokenizer's vocab_size={recipe.vocab_size}")
    if recipe.model.block_size < recipe.train.block_size:
        raise ConfigError(f"{path}: model.block_size={recipe.model.block_size} is shorter than "
                          f"train.block_size={recipe.train.block_size}")
    return recipe


def _pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="run directory: absent or empty, unless --resume")
    p.add_argument("--config", type=Path, help="JSON file overriding the book's recipe: dataset, train_fraction, "
                                               "vocab_size, and objects 'model' (GPTConfig) and 'train' (TrainConfig)")
    p.add_argument("--max-steps", type=positive_int, help="override train.max_steps")
    p.add_argument("--checkpoint-interval", type=non_negative_int,
                   help="override train.checkpoint_interval (0: only at the end, so a killed run starts over)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint "
                                                         "(the config must be the same)")
    p.add_argument("--device", help="cpu, cuda, mps, ... (default: the best available)")


def _check_tokenizer(run: Run, tokenizer: BPETokenizer) -> None:
    """Save the run's tokenizer, or check that the one saved earlier is the same."""
    file = run.directory / TOKENIZER_FILE
    if not file.exists():
        run.write_file(TOKENIZER_FILE, tokenizer.save)
    elif BPETokenizer.load(file).merges != tokenizer.merges:
        raise RunError(f"{file} differs from the tokenizer this recipe trains now; cannot resume")


@command("pretrain", "train a GPT from scratch on a registered data set (default: the book's recipe)",
         _pretrain_arguments)
def pretrain(args: argparse.Namespace) -> None:
    recipe = load_recipe(args.config)
    overrides = {"max_steps": args.max_steps, "checkpoint_interval": args.checkpoint_interval}
    recipe = replace(recipe, train=replace(recipe.train, **{k: v for k, v in overrides.items() if v is not None}))
    run = Run.create(args.out, "pretrain", recipe, resume=args.resume)
    if run.model_dir.exists():
        print(f"{run.directory} is finished; its model is in {run.model_dir}")
        return
    corpus = prepare_corpus(recipe)
    _check_tokenizer(run, corpus.tokenizer)
    seed_everything(recipe.train.seed)
    model = GPT(recipe.model).to(pick_device(args.device))
    print(f"{run.directory}: {model.num_parameters():,} parameters, {len(corpus.train_ids):,} training tokens, "
          f"{recipe.train.max_steps} steps")
    _train(run, model, corpus.train_ids, corpus.val_ids, recipe.train)
    results = score(model, corpus.val_ids, corpus.val_chars, recipe.train.block_size, desc="validation")
    run.add_evaluation("validation", results, overwrite=args.resume)
    run.write_text(CARD_FILE, model_card(run), overwrite=args.resume)
    export_model(run, run.model_dir)
    print(f"validation: loss {results['loss']:.4f}, {results['bits_per_char']:.4f} bits/char; "
          f"model in {run.model_dir}")


def _train(run: Run, model: GPT, train_ids: np.ndarray, val_ids: np.ndarray, cfg: TrainConfig) -> None:
    """train() with checkpoints in the run, a progress bar, and each step's record in metrics.jsonl
    plus elapsed_s: the wall time spent training so far, summed over resumes."""
    done = run.metrics()
    elapsed = done[-1].get("elapsed_s", 0.0) if done else 0.0     # training time before a resume
    started = time.perf_counter()
    with tqdm(total=cfg.max_steps, initial=run.last_step, desc="pretrain", unit="step", disable=None) as bar:
        def on_log(record: dict) -> None:
            run.log({**record, "elapsed_s": elapsed + time.perf_counter() - started})
            bar.update(record["step"] - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            if "val_loss" in record:
                tqdm.write(f"step {record['step']}: loss {record['loss']:.4f}, val_loss {record['val_loss']:.4f}")

        train(model, train_ids, val_ids, cfg, out_dir=run.checkpoints, resume=True, on_log=on_log)


# --- generate ----------------------------------------------------------------------------------
def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory, run directory, or OpenAI size (gpt2, ...)")
    p.add_argument("--prompt", default="", help="text to continue (default: start from end-of-text)")
    p.add_argument("--max-new-tokens", type=positive_int, default=100)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    p.add_argument("--temperature", type=positive_float, default=1.0)
    p.add_argument("--top-k", type=positive_int)
    p.add_argument("--top-p", type=probability)
    p.add_argument("--seed", type=int, help="seed of the sampler, for a reproducible text")
    p.add_argument("--device", help="cpu, cuda, mps, ... (default: the best available)")


@command("generate", "continue a prompt, printing the text as it is generated", _generate_arguments)
def generate(args: argparse.Namespace) -> None:
    model, tokenizer, _ = load_model(args.model, pick_device(args.device))
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                              overflow="slide")
    ids = tokenizer.encode(args.prompt) or [tokenizer.eot_token]
    tokens = stream(model, ids, config=config)                 # checks the options before printing
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
    sys.stdout.write(args.prompt)
    for token in tokens:
        sys.stdout.write(utf8.decode(tokenizer.decode_bytes([token])))
        sys.stdout.flush()
    sys.stdout.write(utf8.decode(b"", final=True) + "\n")


# --- evaluate ----------------------------------------------------------------------------------
def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory, run directory (results go to its eval.json), or OpenAI size")
    p.add_argument("text", help="a UTF-8 text file, or a registered data set (the whole text): "
                                + ", ".join(sorted(data.REGISTRY)))
    p.add_argument("--block-size", type=positive_int, help="tokens per window (default: the model's context)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--overwrite", action="store_true", help="replace the run's earlier results for this text")
    p.add_argument("--device", help="cpu, cuda, mps, ... (default: the best available)")


@command("evaluate", "loss per token, perplexity and bits per character of a model on a text",
         _evaluate_arguments)
def evaluate_command(args: argparse.Namespace) -> None:
    model, tokenizer, run = load_model(args.model, pick_device(args.device))
    text = read_text(args.text)
    ids = np.array(tokenizer.encode(text), dtype=np.int64)
    if len(ids) < 2:
        raise UsageError(f"{args.text}: the text has {len(ids)} token(s); at least 2 are needed")
    chars = len(text) - len(tokenizer.decode(ids[:1].tolist()))    # the first token is never predicted
    results = score(model, ids, chars, args.block_size or model.config.block_size, batch_size=args.batch_size)
    if run is not None:
        run.add_evaluation(args.text, results, overwrite=args.overwrite)
    print(f"{args.text}: loss {results['loss']:.4f} nats/token, perplexity {results['perplexity']:.2f}, "
          f"{results['bits_per_char']:.4f} bits/char over {results['tokens']:,} tokens")


# --- export ------------------------------------------------------------------------------------
def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("out", type=Path, help="output directory (absent or empty)")


@command("export", "write a run's newest checkpoint as a Hugging Face GPT-2 model directory with a model card",
         _export_arguments)
def export(args: argparse.Namespace) -> None:
    out = export_model(Run.open(args.run), args.out)
    print(f"exported {args.run} to {out}")


# --- main --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="gpt2-core", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="GPT-2 from scratch: pretrain, generate, evaluate and export.",
                                     epilog="examples:\n" + __doc__.split("\n\n")[1])
    parser.add_argument("--version", action="version", version=f"gpt2_core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS.values():
        sub = commands.add_parser(c.name, help=c.help, description=c.help)
        c.arguments(sub)
        sub.set_defaults(handler=c.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as e:
        message = " ".join(str(e).split("\n"))
        print(f"gpt2-core {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gpt2-core {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
