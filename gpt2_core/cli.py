"""The command line: ``gpt2-core COMMAND`` or ``python -m gpt2_core COMMAND``.

    gpt2-core pretrain --out runs/book                      # the book's recipe (chapter 4)
    gpt2-core pretrain --config tiny.json --max-steps 500 --checkpoint-interval 100 --out runs/tiny
    gpt2-core pretrain --config tiny.json --max-steps 500 --checkpoint-interval 100 --out runs/tiny --resume
    gpt2-core generate runs/tiny --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --seed 1
    gpt2-core prepare brown --out data/brown                # a corpus into token shards
    gpt2-core evaluate runs/tiny the-verdict                # a registered data set or a text file
    gpt2-core export runs/tiny exported/tiny                # loads in transformers.GPT2LMHeadModel
    gpt2-core export runs/tiny exported/onnx --format onnx  # for onnxruntime, here or in a browser
    gpt2-core finetune-classifier runs/tiny --out runs/spam --epochs 3      # chapter 6: SMS spam
    gpt2-core finetune-instruct runs/ctx256 --out runs/instruct             # chapter 7: a 256-token context

Each command is a `Command` in `COMMANDS`, registered with the `command` decorator: a new one is a
function adding its arguments and a function running it. Mistakes a user can fix (bad paths,
values, config files) end with exit status 2 and a one-line message on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gpt2_core import __version__, data, instruct
from gpt2_core import checkpoint as checkpoint_module
from gpt2_core import model as model_module
from gpt2_core import prepare as prepare_module
from gpt2_core.finetune import (
    SMS_LABELS,
    FinetuneConfig,
    GPTClassifier,
    apply_lora,
    balance_classes,
    classification_loader,
    confusion_matrix,
    load_sms_spam,
    merge_lora,
    precision_recall_f1,
    predict,
    save_classifier,
    set_trainable,
    train_classifier,
    train_val_test_split,
)
from gpt2_core.evaluate import score_text
from gpt2_core.generate import GenerationConfig, stream
from gpt2_core.model import GPT, GPT2_SIZES, from_pretrained
from gpt2_core.pretrained import BOOK_RECIPE, Recipe, prepare_corpus
from gpt2_core.runs import (
    CARD_FILE,
    CLASSIFIER_DIR,
    TOKENIZER_FILE,
    ConfigError,
    Run,
    RunError,
    atomic_write_text,
    config_from_dict,
    export_model,
    is_run,
    model_card,
    read_json,
)
from gpt2_core.runtime import pick_device, seed_everything
from gpt2_core.tokenizer import BPETokenizer, Tokenizer, gpt2_tokenizer
from gpt2_core.train import TrainConfig, train

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


class UsageError(Exception):
    """A mistake in the command line or the files it names."""


USER_ERRORS = (UsageError, RunError, ConfigError, data.DataError, model_module.CheckpointError,
               checkpoint_module.CheckpointError, ValueError, OSError)
DEVICE_HELP = "cpu, cuda, mps, ... (default: the best available)"
BASE_HELP = ("the model to start from: a model directory (config.json + model.safetensors + tokenizer.json), "
             "a pretrain run directory, or an OpenAI size (gpt2, ...)")


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
        if run.kind == "finetune-classifier":
            raise UsageError(f"{run.directory} is a classifier run, not a language model; its classifier "
                             f"is in {run.directory / CLASSIFIER_DIR} (gpt2_core.finetune.load_classifier)")
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


# --- configurations, run directories and logging -----------------------------------------------
def load_config(path: Path | None, base):
    """Dataclass `base` with the fields of JSON file `path` replaced (errors name the file and key)."""
    if path is None:
        return base
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    return config_from_dict(base, read_json(path), source=str(path))


def overridden(config, **values):
    """Dataclass `config` with the fields given a value other than None (command-line options) replaced."""
    return replace(config, **{k: v for k, v in values.items() if v is not None})


def require_empty(directory: Path) -> None:
    """Refuse an output directory that exists and is not empty (fine-tuning runs do not resume)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} exists and is not empty; choose a new directory "
                         "(a fine-tuning run cannot be resumed: start it again)")


@contextmanager
def logging_to(run: Run, total: int, desc: str, elapsed: float = 0.0) -> Iterator[Callable[[dict], None]]:
    """An on_log callback appending each record to the run's metrics.jsonl, plus elapsed_s (the wall
    time so far, starting from `elapsed`, the time before a resume), and moving a progress bar."""
    started = time.perf_counter()
    with tqdm(total=total, initial=run.last_step, desc=desc, unit="step", disable=None) as bar:
        def on_log(record: dict) -> None:
            run.log({**record, "elapsed_s": elapsed + time.perf_counter() - started})
            bar.update(record["step"] - bar.n)
            if "loss" in record:
                bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            if "val_loss" in record:
                tqdm.write(f"step {record['step']}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in record.items() if k.endswith(("loss", "acc"))))
        yield on_log


# --- pretrain ----------------------------------------------------------------------------------
def load_recipe(path: Path | None, base: Recipe = BOOK_RECIPE) -> Recipe:
    """`base` with the fields of JSON file `path` replaced (nested "model" and "train" objects)."""
    recipe = load_config(path, base)
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
    p.add_argument("--device", help=DEVICE_HELP)


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
    recipe = replace(recipe, train=overridden(recipe.train, max_steps=args.max_steps,
                                              checkpoint_interval=args.checkpoint_interval))
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
    text = data.fetch(recipe.dataset).read_text(encoding="utf-8")
    val_text = text[int(recipe.train_fraction * len(text)):]         # prepare_corpus's validation split
    results = score_text(model, corpus.tokenizer, val_text, context=recipe.train.block_size).as_dict()
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
    with logging_to(run, cfg.max_steps, "pretrain", elapsed) as on_log:
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
    p.add_argument("--device", help=DEVICE_HELP)


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
    p.add_argument("--context", type=positive_int, help="tokens per window (default: the model's context)")
    p.add_argument("--stride", type=positive_int, help="tokens a window advances; each scored prediction sees at "
                                                       "least context - stride tokens (default: context)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--overwrite", action="store_true", help="replace the run's earlier results for this text")
    p.add_argument("--device", help=DEVICE_HELP)


@command("evaluate", "loss per token, perplexity and bits per character of a model on a text",
         _evaluate_arguments)
def evaluate_command(args: argparse.Namespace) -> None:
    model, tokenizer, run = load_model(args.model, pick_device(args.device))
    text = read_text(args.text)
    context = args.context or model.config.block_size
    if context > model.config.block_size:
        raise UsageError(f"--context {context} is longer than the model's context ({model.config.block_size})")
    if args.stride and args.stride > context:
        raise UsageError(f"--stride {args.stride} is longer than the context ({context})")
    if len(tokenizer.encode(text)) < 2:
        raise UsageError(f"{args.text}: the text has fewer than 2 tokens; nothing to predict")
    score = score_text(model, tokenizer, text, context=context, stride=args.stride, batch_size=args.batch_size)
    results = {**score.as_dict(), "context": context, "stride": args.stride or context}
    if run is not None:
        run.add_evaluation(args.text, results, overwrite=args.overwrite)
    print(f"{args.text}: loss {results['loss']:.4f} nats/token, perplexity {results['perplexity']:.2f}, "
          f"{results['bits_per_char']:.4f} bits/char, {results['bits_per_byte']:.4f} bits/byte over "
          f"{results['tokens']:,} tokens (context {context}, stride {results['stride']})")


# --- prepare (a corpus into token shards; gpt2_core.prepare) ----------------------------------
command("prepare", prepare_module.HELP, prepare_module.add_arguments)(prepare_module.run)


# --- export ------------------------------------------------------------------------------------
def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory (--format onnx: also a model directory "
                                          "or an OpenAI size)")
    p.add_argument("out", type=Path, help="output directory (absent or empty)")
    p.add_argument("--format", choices=("hf", "onnx"), default="hf",
                   help="hf: the run's newest checkpoint in the Hugging Face GPT-2 layout "
                        "(default); onnx: the run's model/ as model.onnx, with tokenizer.web.json "
                        "and model.json, for onnxruntime and the book's live pages")


@command("export", "write a run's newest checkpoint as a Hugging Face GPT-2 model directory "
                   "with a model card, or its model as ONNX", _export_arguments)
def export(args: argparse.Namespace) -> None:
    if args.format == "onnx":
        from gpt2_core.onnx_export import export_for_web   # needs the optional onnx packages

        model, tokenizer, _ = load_model(str(args.run), torch.device("cpu"))
        out = export_for_web(model, tokenizer, args.out)
    else:
        out = export_model(Run.open(args.run), args.out)
    print(f"exported {args.run} to {out}")


# --- finetune-classifier (chapter 6) -----------------------------------------------------------
TRAINABLE = ("head", "last_block", "all")
SPLIT_SEED = 123                                   # the chapters' data splits


@dataclass
class ClassifierConfig(FinetuneConfig):
    """Chapter 6's FinetuneConfig plus its other choices: what trains, LoRA, message length."""

    trainable: str | None = None   # "head", "last_block" or "all"; default "all", with LoRA "head"
    lora_rank: int = 0             # > 0: LoRA matrices of this rank (alpha = 2 * rank) and the head train
    max_length: int = 64           # tokens per message (its last ones), at most the model's context
    limit: int | None = None       # train on the first `limit` training messages only (smoke tests)

    def __post_init__(self):
        if self.trainable not in (None, *TRAINABLE):
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.lora_rank and self.trainable not in (None, "head"):
            raise ValueError(f"lora_rank={self.lora_rank} trains the LoRA matrices and the head; "
                             f"trainable must be 'head', got {self.trainable!r}")
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lora_rank < 0 or (self.limit is not None and self.limit < 1):
            raise ValueError(f"need lora_rank >= 0 and limit >= 1, got {self.lora_rank} and {self.limit}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")

    def resolved(self, block_size: int) -> ClassifierConfig:
        """This config with `trainable` decided and `max_length` cut to a context of `block_size`."""
        return replace(self, trainable=self.trainable or ("head" if self.lora_rank else "all"),
                       max_length=min(self.max_length, block_size))


def sms_splits(limit: int | None = None) -> dict[str, list]:
    """Chapter 6's data: the class-balanced SMS split, 70/10/20 with seed 123, and the "full test"
    distribution (every message in neither train nor val); `limit` keeps the first training messages."""
    messages = load_sms_spam()
    train_set, val_set, test_set = train_val_test_split(balance_classes(messages, seed=SPLIT_SEED), 0.7, 0.1,
                                                        seed=SPLIT_SEED)
    seen = {id(m) for m in train_set + val_set}
    return {"train": train_set[:limit], "val": val_set, "test": test_set,
            "full test": [m for m in messages if id(m) not in seen]}


def build_classifier(gpt: GPT, cfg: ClassifierConfig) -> GPTClassifier:
    """Chapter 6's classifier on `gpt` (a new head) with the weights `cfg` trains, on gpt's device."""
    device = next(gpt.parameters()).device
    classifier = GPTClassifier(gpt, SMS_LABELS, cfg.max_length)
    set_trainable(classifier, cfg.trainable)
    if cfg.lora_rank:
        apply_lora(classifier.gpt.transformer, rank=cfg.lora_rank, alpha=2 * cfg.lora_rank)
    return classifier.to(device)


def classifier_report(classifier: GPTClassifier, loader) -> dict:
    """Loss, accuracy, and spam precision/recall/F1 over `loader`, with the confusion matrix."""
    labels, predictions, loss = predict(classifier, loader)
    counts = confusion_matrix(labels, predictions, len(SMS_LABELS))
    return {"messages": len(labels), "loss": loss, **precision_recall_f1(counts, positive=SMS_LABELS.index("spam")),
            "confusion": counts.tolist()}


def _finetune_classifier_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help=BASE_HELP)
    p.add_argument("--out", type=Path, required=True, help="run directory (absent or empty)")
    p.add_argument("--config", type=Path, help="JSON file with FinetuneConfig's keys (epochs, batch_size, lr, "
                                               "min_lr, warmup_fraction, weight_decay, grad_clip, seed) and "
                                               "trainable, lora_rank, max_length, limit")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="peak learning rate; sets min_lr to lr/10, the chapters' ratio")
    p.add_argument("--trainable", choices=TRAINABLE, help="what trains besides the new head (default: all; "
                                                          "with --lora-rank: only the head)")
    p.add_argument("--lora-rank", type=positive_int, help="train LoRA matrices of this rank and the head")
    p.add_argument("--max-length", type=positive_int, help="tokens per message (default: 64, at most the context)")
    p.add_argument("--seed", type=int, help="seed of the head's initialisation and the batches (default: 123)")
    p.add_argument("--limit", type=positive_int, help="train on the first N training messages only (smoke tests)")
    p.add_argument("--device", help=DEVICE_HELP)


@command("finetune-classifier", "fine-tune a model into chapter 6's SMS spam classifier",
         _finetune_classifier_arguments)
def finetune_classifier(args: argparse.Namespace) -> None:
    cfg = overridden(load_config(args.config, ClassifierConfig()), epochs=args.epochs, lr=args.lr,
                     min_lr=args.lr and args.lr / 10, trainable=args.trainable, lora_rank=args.lora_rank,
                     max_length=args.max_length, seed=args.seed, limit=args.limit)
    require_empty(args.out)
    gpt, tokenizer, _ = load_model(args.base, pick_device(args.device))
    cfg = cfg.resolved(gpt.config.block_size)
    splits = sms_splits(cfg.limit)
    run = Run.create(args.out, "finetune-classifier", {"base": args.base, "dataset": "sms-spam",
                                                       "labels": list(SMS_LABELS), "model": gpt.config,
                                                       "finetune": cfg})
    seed_everything(cfg.seed)
    classifier = build_classifier(gpt, cfg)
    loaders = {name: classification_loader(part, tokenizer, max_length=cfg.max_length, batch_size=cfg.batch_size,
                                           shuffle=name == "train", seed=cfg.seed) for name, part in splits.items()}
    steps = len(loaders["train"])
    with logging_to(run, cfg.epochs * steps, "finetune-classifier") as on_log:
        train_classifier(classifier, loaders["train"], loaders["val"], cfg,
                         on_epoch=lambda record: on_log({"step": record["epoch"] * steps, **record}))
    for name in ("test", "full test"):
        run.add_evaluation(name, classifier_report(classifier, loaders[name]))
    directory = save_classifier(merge_lora(classifier), run.directory / CLASSIFIER_DIR, tokenizer)
    card = model_card(run)
    run.write_text(CARD_FILE, card)
    atomic_write_text(directory / CARD_FILE, card)
    for name, results in run.evaluations.items():
        print(f"{name}: accuracy {results['accuracy']:.4f}, spam precision {results['precision']:.4f}, "
              f"recall {results['recall']:.4f}, F1 {results['f1']:.4f} over {results['messages']:,} messages")
    print(f"classifier in {directory}")


# --- finetune-instruct (chapter 7) -------------------------------------------------------------
RULE_EVAL_TOKENS = 12                              # the tokens instruct.rule_eval generates per item


@dataclass
class InstructConfig:
    """Chapter 7's choices: its TrainConfig values (block_size: the model's context), prompt masking,
    and the synthetic rule tasks added to the training data and held out for the rule accuracy."""

    max_steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 50        # steps between validation response losses; 0: none
    seed: int = 0
    mask_prompt: bool = True       # the loss counts only the response tokens
    synthetic_train: int = 250     # items per synthetic task added to the training data
    synthetic_test: int = 50       # held-out items per task for the rule accuracy
    synthetic_seed: int = 7

    def __post_init__(self):
        self.train_config(1)                       # TrainConfig's checks
        if self.synthetic_train < 0 or self.synthetic_test < 1:
            raise ValueError(f"need synthetic_train >= 0 and synthetic_test >= 1, "
                             f"got {self.synthetic_train} and {self.synthetic_test}")

    def train_config(self, block_size: int) -> TrainConfig:
        """The TrainConfig that instruct.finetune gets for a model with context `block_size`."""
        return TrainConfig(max_steps=self.max_steps, batch_size=self.batch_size, block_size=block_size,
                           lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps,
                           weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                           eval_interval=self.eval_interval, seed=self.seed)


@dataclass
class InstructData:
    """Chapter 7's data, encoded: training (entries + synthetic), validation and test examples, and
    the held-out synthetic items."""

    train: list[instruct.Example]
    val: list[instruct.Example]
    test: list[instruct.Example]
    rules: list[dict]


def instruct_data(cfg: InstructConfig, tokenizer: Tokenizer) -> InstructData:
    """The instruction data split 85/5/10 with seed 123, plus `cfg`'s synthetic items, encoded."""
    train_entries, val_entries, test_entries = instruct.split_entries(instruct.load_instruction_data(),
                                                                      seed=SPLIT_SEED)
    synthetic_train, synthetic_test = instruct.make_synthetic(cfg.synthetic_train, cfg.synthetic_test,
                                                              seed=cfg.synthetic_seed)
    def encode(entries: list[dict]) -> list[instruct.Example]:
        return [instruct.encode_example(e, tokenizer) for e in entries]
    return InstructData(encode(train_entries + synthetic_train), encode(val_entries), encode(test_entries),
                        synthetic_test)


def check_context(model: GPT, tokenizer: Tokenizer, items: list[dict]) -> None:
    """Refuse a model whose context cannot hold the synthetic prompts and their answers."""
    longest = max(len(tokenizer.encode(instruct.format_prompt(item))) for item in items)
    if longest + RULE_EVAL_TOKENS > model.config.block_size:
        raise UsageError(f"the model's context ({model.config.block_size} tokens) is too short for the synthetic "
                         f"prompts ({longest} tokens + {RULE_EVAL_TOKENS} to answer); start from a model with a "
                         "longer model.block_size (chapter 7 uses 256)")


def instruct_scores(model: GPT, tokenizer: Tokenizer, examples: InstructData) -> tuple[float, dict[str, float]]:
    """Response perplexity on the test split and rule accuracy (per task and "all") on the synthetic items."""
    perplexity = instruct.response_perplexity(model, examples.test, pad_id=tokenizer.eot_token)
    accuracy, _ = instruct.rule_eval(model, tokenizer, examples.rules)
    return perplexity, accuracy


def _finetune_instruct_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help=BASE_HELP)
    p.add_argument("--out", type=Path, required=True, help="run directory (absent or empty)")
    p.add_argument("--config", type=Path, help="JSON file with the keys max_steps, batch_size, lr, min_lr, "
                                               "warmup_steps, weight_decay, grad_clip, eval_interval, seed, "
                                               "mask_prompt, synthetic_train, synthetic_test, synthetic_seed")
    p.add_argument("--max-steps", type=positive_int, help="optimizer steps (default: 300)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: 3e-3, for the book's model; "
                                                     "GPT-2 wants about 5e-5); sets min_lr to lr/10")
    p.add_argument("--batch-size", type=positive_int, help="examples per step (default: 16)")
    p.add_argument("--no-mask-prompt", action="store_true", help="let the prompt tokens count in the loss too")
    p.add_argument("--seed", type=int, help="seed of the batches (default: 0)")
    p.add_argument("--device", help=DEVICE_HELP)


@command("finetune-instruct", "fine-tune a language model to follow instructions (chapter 7)",
         _finetune_instruct_arguments)
def finetune_instruct(args: argparse.Namespace) -> None:
    cfg = overridden(load_config(args.config, InstructConfig()), max_steps=args.max_steps, lr=args.lr,
                     min_lr=args.lr and args.lr / 10, batch_size=args.batch_size, seed=args.seed,
                     mask_prompt=False if args.no_mask_prompt else None)
    require_empty(args.out)
    model, tokenizer, _ = load_model(args.base, pick_device(args.device))
    examples = instruct_data(cfg, tokenizer)
    check_context(model, tokenizer, examples.rules)
    run = Run.create(args.out, "finetune-instruct", {"base": args.base, "dataset": "instruction-data",
                                                     "model": model.config, "finetune": cfg})
    if isinstance(tokenizer, BPETokenizer):
        run.write_file(TOKENIZER_FILE, tokenizer.save)
    seed_everything(cfg.seed)
    perplexity_before, accuracy_before = instruct_scores(model, tokenizer, examples)
    seed_everything(cfg.seed)
    with logging_to(run, cfg.max_steps, "finetune-instruct") as on_log:
        instruct.finetune(model, examples.train, cfg.train_config(model.config.block_size),
                          pad_id=tokenizer.eot_token, mask_prompt=cfg.mask_prompt, val_examples=examples.val,
                          on_log=on_log)
    perplexity, accuracy = instruct_scores(model, tokenizer, examples)
    run.add_evaluation("instruction-data test", {"examples": len(examples.test), "response_perplexity": perplexity,
                                                 "base_response_perplexity": perplexity_before})
    run.add_evaluation("synthetic rules", {"items": len(examples.rules), "rule_accuracy": accuracy["all"],
                                           "base_rule_accuracy": accuracy_before["all"], "by_task": accuracy,
                                           "base_by_task": accuracy_before})
    run.write_text(CARD_FILE, model_card(run))
    export_model(run, run.model_dir, model=model)
    print(f"response perplexity on the test split {perplexity_before:.2f} -> {perplexity:.2f}; "
          f"rule accuracy {accuracy_before['all']:.1%} -> {accuracy['all']:.1%}; model in {run.model_dir}")


# --- main --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="gpt2-core", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="GPT-2 from scratch: pretrain, fine-tune, generate, evaluate and export.",
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
