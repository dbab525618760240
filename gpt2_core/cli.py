"""The command line: ``gpt2-core COMMAND`` or ``python -m gpt2_core COMMAND``.

    gpt2-core pretrain --out runs/book                      # the book's recipe (chapter 4)
    gpt2-core pretrain --config tiny.json --max-steps 500 --checkpoint-interval 100 --out runs/tiny
    gpt2-core pretrain --config tiny.json --max-steps 500 --checkpoint-interval 100 --out runs/tiny --resume
    gpt2-core generate runs/tiny --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --seed 1
    gpt2-core generate runs/tiny --prompt "ROMEO:" --num-beams 5 --length-penalty 1.5   # beam search
    gpt2-core generate runs/instruct --instruction "Name a colour."  # chapter 7's prompt format
    gpt2-core classify runs/spam "WINNER!! Claim your prize"        # label and spam probability
    gpt2-core prepare brown --out data/brown                # a corpus into token shards
    gpt2-core evaluate runs/tiny the-verdict                # a registered data set or a text file
    gpt2-core export runs/tiny exported/tiny                # loads in transformers.GPT2LMHeadModel
    gpt2-core export runs/tiny exported/onnx --format onnx  # for onnxruntime, here or in a browser
    gpt2-core finetune-classifier runs/tiny --out runs/spam --epochs 3      # chapter 6: SMS spam
    gpt2-core finetune-instruct runs/ctx256 --out runs/instruct             # chapter 7: a 256-token context
    gpt2-core finetune-preference runs/instruct --out runs/dpo              # chapter 8: DPO

Each command is a `Command` in `COMMANDS`, registered with the `command` decorator: a new one is a
function adding its arguments and a function running it. Mistakes a user can fix (bad paths,
values, config files) end with exit status 2 and a one-line message on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from gpt2_core import __version__, classifier, data, instruct, preference, pretrained
from gpt2_core import decode_cli
from gpt2_core.arg_types import non_negative_int, positive_float, positive_int
from gpt2_core import prepare as prepare_module
from gpt2_core.classifier import CLASSIFIER_KIND, TRAINABLE, ClassifierConfig
from gpt2_core.configs import config_from_dict
from gpt2_core.errors import ConfigError, GPT2CoreError
from gpt2_core.evaluate import score_text
from gpt2_core.instruct import INSTRUCT_KIND, InstructConfig
from gpt2_core.preference import PREFERENCE_KIND, PreferenceConfig
from gpt2_core.loading import BOOK, load_model, read_text
from gpt2_core.model import GPT2_SIZES, GPTConfig, flops_per_token
from gpt2_core.pretrained import BOOK_RECIPE, PRETRAIN_KIND
from gpt2_core.runs import (
    CLASSIFIER_DIR,
    Run,
    read_json,
)
from gpt2_core.parallel import rank_and_world
from gpt2_core.publish import export_model
from gpt2_core.runtime import pick_device
from gpt2_core.shards import Shards, is_prepared
from gpt2_core.train import TrainConfig


class UsageError(GPT2CoreError):
    """A mistake in the command line or the files it names."""


# the project's own errors, and the file system's (a missing or unwritable path)
USER_ERRORS = (GPT2CoreError, OSError)
DEVICE_HELP = "cpu, cuda, mps, ... (default: the best available)"
BASE_HELP = ("the model to start from: 'book' (chapter 4's), a model directory (config.json + "
             "model.safetensors + tokenizer.json), a pretrain run directory, or an OpenAI size "
             f"({', '.join(GPT2_SIZES)})")


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



# --- configurations, run directories and logging -----------------------------------------------
def load_config(path: Path | None, base):
    """Dataclass `base` with the fields of JSON file `path` replaced (errors name the file and key)."""
    if path is None:
        return base
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    return config_from_dict(base, read_json(path), source=str(path))


def overridden(config, values: dict[str, object]):
    """Dataclass `config` with the fields named in `values` ("train.lr": nested) replaced, where
    the value (a command-line option) is not None; an invalid result is a ConfigError."""
    nested: dict[str, dict] = {}
    direct = {}
    for name, value in values.items():
        if value is None:
            continue
        outer, _, inner = name.partition(".")
        if inner:
            nested.setdefault(outer, {})[inner] = value
        else:
            direct[name] = value
    try:
        for outer, inner in nested.items():
            direct[outer] = replace(getattr(config, outer), **inner)
        return replace(config, **direct)
    except ValueError as e:
        raise ConfigError(f"invalid options: {e}") from None


def require_empty(directory: Path) -> None:
    """Refuse an output directory that exists and is not empty (fine-tuning runs do not resume)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} exists and is not empty; choose a new directory "
                         "(a fine-tuning run cannot be resumed: start it again)")


@contextmanager
def created(directory: Path, kind: str, config) -> Iterator[Run]:
    """A new run in `directory`, removed again if the job stops on a user error."""
    fresh = not directory.exists()
    run = Run.create(directory, kind, config)
    try:
        yield run
    except GPT2CoreError:
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        raise


@contextmanager
def logging_to(run: Run, total: int | None, desc: str) -> Iterator[Callable[[dict], None]]:
    """An on_log callback for a job: it moves a progress bar over `total` steps and prints the
    validation records (the job itself writes them to the run)."""
    with tqdm(total=total, initial=run.last_step, desc=desc, unit="step", disable=None) as bar:
        def on_log(record: dict) -> None:
            bar.update(record["step"] - bar.n)
            if "loss" in record:
                bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            if "val_loss" in record:
                tqdm.write(f"step {record['step']}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in record.items() if k.endswith(("loss", "acc"))))
        yield on_log


# --- pretrain (also `python -m gpt2_core.launch train`, under torchrun too) --------------------
POSITIVE_COUNTS = ("max_steps", "batch_size", "grad_accum_steps", "block_size", "eval_batches")
MODELS = ("book", *GPT2_SIZES)


def _train_flag_type(f: dataclasses.Field) -> Callable[[str], object]:
    """The argparse type of TrainConfig field `f`: counts are checked as they are parsed."""
    if f.type is int and f.name != "seed":
        return positive_int if f.name in POSITIVE_COUNTS else non_negative_int
    return f.type


def _pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="run directory: absent or empty, unless --resume")
    p.add_argument("--config", type=Path,
                   help="JSON file overriding the book's recipe: dataset, train_fraction, "
                        "vocab_size, and objects 'model' (GPTConfig) and 'train' (TrainConfig)")
    p.add_argument("--data", help="a registered data set, or a folder of token shards written "
                                  "by `gpt2-core prepare` (default: the recipe's)")
    p.add_argument("--model", choices=MODELS,
                   help="the model's shape: 'book' (chapter 4's) or an OpenAI size, with the "
                        "data's vocabulary (default: the recipe's; 'book' for a shard folder)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest intact checkpoint (the config "
                        "must be the same); a finished run is left as it is")
    p.add_argument("--device", help=DEVICE_HELP + "; under torchrun: cuda:LOCAL_RANK or cpu")
    p.add_argument("--log-interval", type=non_negative_int, default=0,
                   help="print a line with loss, tokens/s and MFU every N steps (default: 0, a "
                        "progress bar)")
    p.add_argument("--peak-flops", type=positive_float, default=100e9,
                   help="for MFU: the device's peak FLOP/s (default: 1e11)")
    for f in dataclasses.fields(TrainConfig):         # every TrainConfig field is a flag
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction,
                           help=f"train.{f.name} (default: {getattr(BOOK_RECIPE.train, f.name)})")
        else:
            p.add_argument(flag, type=_train_flag_type(f),
                           help=f"train.{f.name} (default: {getattr(BOOK_RECIPE.train, f.name)})")


def pretrain_recipe(args: argparse.Namespace) -> pretrained.Recipe:
    """The recipe of a pretrain command line: --config's (or the book's), with --data, --model
    and the TrainConfig flags given replaced. A model named by --model (or the book's, when the
    config keeps it) takes the data's vocabulary and a context of at least train.block_size."""
    recipe = load_config(args.config, BOOK_RECIPE)
    train = overridden(recipe.train, {f.name: getattr(args, f.name)
                                      for f in dataclasses.fields(TrainConfig)})
    dataset = recipe.dataset if args.data is None else args.data
    vocab_size = recipe.vocab_size
    if is_prepared(dataset):
        dataset = str(Path(dataset).resolve())        # ./data, data/ and a link: one recipe
        vocab_size = Shards(dataset, "train").vocab_size
    model = recipe.model
    if args.model is not None or model == BOOK_RECIPE.model:
        named = args.model or "book"
        model = BOOK_RECIPE.model if named == "book" else GPTConfig.from_name(named)
        model = replace(model, vocab_size=vocab_size,
                        block_size=max(model.block_size, train.block_size))
    try:
        recipe = replace(recipe, dataset=dataset, vocab_size=vocab_size, model=model,
                         train=train)
    except ValueError as e:
        raise ConfigError(f"invalid options: {e}") from None
    if is_prepared(dataset):
        _check_splits(recipe)
    return recipe


def _check_splits(recipe: pretrained.Recipe) -> None:
    """Refuse, before anything is written, a shard folder whose splits are too short to train
    one batch on and to evaluate one window of."""
    block, batch = recipe.train.block_size, recipe.train.batch_size
    need = {"train": batch * (block + 1) + block, "val": block + 1}
    for split, tokens in need.items():
        have = len(Shards(recipe.dataset, split))
        if have < tokens:
            raise UsageError(
                f"{recipe.dataset}: the {split} split has {have:,} tokens; it needs at least "
                f"{tokens:,} (" + ("one window of block_size + 1" if split == "val" else
                                   f"a batch of {batch} windows of block_size + 1")
                + f" = {block + 1} tokens); prepare it with more data or a larger "
                "--val-fraction, or train with a smaller --block-size")


def _start_processes(device: str | None) -> tuple[torch.device, bool]:
    """The device of this process, and whether it is one of several (torchrun sets RANK):
    then it joins the process group (NCCL on CUDA, gloo on CPU) and uses cuda:LOCAL_RANK."""
    distributed = "RANK" in os.environ
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if distributed:
        on_cuda = torch.cuda.is_available() and device != "cpu"
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if on_cuda \
            else torch.device("cpu")
    else:
        chosen = pick_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return chosen, distributed


def _on_rank_zero(job: Callable[[], object], distributed: bool) -> None:
    """Run `job` on rank 0 only; a user error there is raised on every rank (no rank waits for
    one that has stopped). Also a barrier."""
    error = None
    if rank_and_world()[0] == 0:
        try:
            job()
        except USER_ERRORS as e:
            error = " ".join(str(e).split())
    if distributed:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise UsageError(error)


@command("pretrain", "train a GPT from scratch on a registered data set or a folder of token "
                     "shards (default: the book's recipe); under torchrun on several GPUs",
         _pretrain_arguments)
def pretrain(args: argparse.Namespace) -> None:
    recipe = pretrain_recipe(args)
    device, distributed = _start_processes(args.device)
    try:
        _on_rank_zero(lambda: Run.create(args.out, PRETRAIN_KIND, recipe, resume=args.resume),
                      distributed)
        run = Run.open(args.out)
        rank, world = rank_and_world()
        if run.model_dir.exists():
            if rank == 0:
                print(f"{run.directory} is finished; its model is in {run.model_dir}")
            return
        with _progress(run, recipe, args, world) as on_log:
            pretrained.pretrain(recipe, run, device=device, on_log=on_log)
        if rank == 0:
            results = run.evaluations["validation"]
            bits = results["bits_per_char"]                  # None for a folder of shards
            print(f"validation: loss {results['loss']:.4f}"
                  + (f", {bits:.4f} bits/char" if bits else "") + f"; model in {run.model_dir}")
    finally:
        if distributed:
            dist.destroy_process_group()


@contextmanager
def _progress(run: Run, recipe: pretrained.Recipe, args: argparse.Namespace, world: int
              ) -> Iterator[Callable[[dict], None]]:
    """pretrain's on_log: a progress bar, or with --log-interval N a line every N steps."""
    if not args.log_interval:
        with logging_to(run, recipe.train.max_steps, "pretrain") as on_log:
            yield on_log
        return
    flops = flops_per_token(recipe.model, recipe.train.block_size)

    def on_log(record: dict) -> None:
        if record["step"] % args.log_interval == 0 or "val_loss" in record:
            tokens_per_s = record["tokens_per_s"] * world
            val = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
            print(f"step {record['step']:6d} loss {record['loss']:.4f}{val} "
                  f"lr {record['lr']:.2e} {tokens_per_s:,.0f} tok/s "
                  f"MFU {flops * tokens_per_s / args.peak_flops:.1%}", flush=True)
    yield on_log


# --- generate and classify (chapters 5 to 7; gpt2_core.decode_cli) ---------------------------
command("generate", "continue a prompt with any of chapter 5's strategies, or answer an instruction "
                    "(chapter 7)", decode_cli.generate_arguments)(decode_cli.generate)
command("classify", "label messages as spam or ham with a chapter 6 classifier run",
        decode_cli.classify_arguments)(decode_cli.classify)


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
        from gpt2_core.onnx_export import (
            export_for_web,  # needs the optional onnx packages
        )

        model, tokenizer, _ = load_model(str(args.run), torch.device("cpu"))
        out = export_for_web(model, tokenizer, args.out)
    else:
        out = export_model(Run.open(args.run), args.out)
    print(f"exported {args.run} to {out}")


# --- finetune-classifier (chapter 6), finetune-instruct (7) and finetune-preference (8) ---------
def _finetune_classifier_arguments(p: argparse.ArgumentParser) -> None:
    default = ClassifierConfig(base=BOOK)
    p.add_argument("base", help=BASE_HELP)
    p.add_argument("--out", type=Path, required=True, help="run directory (absent or empty)")
    p.add_argument("--config", type=Path, help="JSON file with ClassifierConfig's keys: an object "
                                               "'finetune' (FinetuneConfig), trainable, lora_rank, "
                                               "pretrained, max_length, limit")
    p.add_argument("--epochs", type=positive_int, help=f"default: {default.finetune.epochs}")
    p.add_argument("--lr", type=positive_float, help=f"peak learning rate (default: "
                                                     f"{default.finetune.lr:g}); sets min_lr to lr/10")
    p.add_argument("--trainable", choices=TRAINABLE, help=f"what trains besides the new head "
                                                          f"(default: {default.trainable}; with "
                                                          "--lora-rank: head)")
    p.add_argument("--lora-rank", type=positive_int, help="train LoRA matrices of this rank and the head")
    p.add_argument("--max-length", type=positive_int, help=f"tokens per message (default: "
                                                           f"{default.max_length}, at most the context)")
    p.add_argument("--seed", type=int, help=f"seed of the head and the batches "
                                            f"(default: {default.finetune.seed})")
    p.add_argument("--limit", type=positive_int, help="train on the first N training messages only")
    p.add_argument("--device", help=DEVICE_HELP)


@command("finetune-classifier", "fine-tune a model into chapter 6's SMS spam classifier",
         _finetune_classifier_arguments)
def finetune_classifier(args: argparse.Namespace) -> None:
    cfg = overridden(load_config(args.config, ClassifierConfig(base=args.base)), {
        "finetune.epochs": args.epochs, "finetune.lr": args.lr,
        "finetune.min_lr": args.lr and args.lr / 10, "finetune.seed": args.seed,
        "trainable": args.trainable or (args.lora_rank and "head"), "lora_rank": args.lora_rank,
        "max_length": args.max_length, "limit": args.limit})
    require_empty(args.out)
    with created(args.out, CLASSIFIER_KIND, cfg) as run, \
            logging_to(run, None, "finetune-classifier") as on_log:
        results = classifier.finetune_classifier(cfg, run, device=args.device, on_log=on_log)
    for name, r in results.evaluations.items():
        print(f"{name}: accuracy {r['accuracy']:.4f}, spam precision {r['precision']:.4f}, "
              f"recall {r['recall']:.4f}, F1 {r['f1']:.4f} over {r['messages']:,} messages")
    print(f"classifier in {run.directory / CLASSIFIER_DIR}")


def _finetune_instruct_arguments(p: argparse.ArgumentParser) -> None:
    default = InstructConfig(base=BOOK)
    p.add_argument("base", help=BASE_HELP)
    p.add_argument("--out", type=Path, required=True, help="run directory (absent or empty)")
    p.add_argument("--config", type=Path, help="JSON file with InstructConfig's keys: an object "
                                               "'train' (TrainConfig), mask_prompt, split_seed, "
                                               "synthetic_train, synthetic_test, synthetic_seed, "
                                               "response_tokens")
    p.add_argument("--max-steps", type=positive_int, help=f"default: {default.train.max_steps}")
    p.add_argument("--lr", type=positive_float, help=f"peak learning rate (default: "
                                                     f"{default.train.lr:g}, for the book's model; "
                                                     "GPT-2 wants about 5e-5); sets min_lr to lr/10")
    p.add_argument("--batch-size", type=positive_int, help=f"default: {default.train.batch_size}")
    p.add_argument("--block-size", type=positive_int, help=f"tokens per example, at most the "
                                                           f"model's context (default: "
                                                           f"{default.train.block_size})")
    p.add_argument("--no-mask-prompt", action="store_true", help="let the prompt tokens count in the loss too")
    p.add_argument("--seed", type=int, help=f"seed of the batches (default: {default.train.seed})")
    p.add_argument("--device", help=DEVICE_HELP)


@command("finetune-instruct", "fine-tune a language model to follow instructions (chapter 7)",
         _finetune_instruct_arguments)
def finetune_instruct(args: argparse.Namespace) -> None:
    cfg = overridden(load_config(args.config, InstructConfig(base=args.base)), {
        "train.max_steps": args.max_steps, "train.lr": args.lr,
        "train.min_lr": args.lr and args.lr / 10, "train.batch_size": args.batch_size,
        "train.block_size": args.block_size, "train.seed": args.seed,
        "mask_prompt": False if args.no_mask_prompt else None})
    require_empty(args.out)
    with created(args.out, INSTRUCT_KIND, cfg) as run, \
            logging_to(run, cfg.train.max_steps, "finetune-instruct") as on_log:
        results = instruct.finetune_instruct(cfg, run, device=args.device, on_log=on_log)
    test, rules = results.evaluations["test split"], results.evaluations["rule-checked"]
    print(f"response perplexity on the test split {test['response_perplexity_base']:.2f} -> "
          f"{test['response_perplexity']:.2f}; rule accuracy {rules['accuracy_base']:.1%} -> "
          f"{rules['accuracy']:.1%}; model in {run.model_dir}")


def _finetune_preference_arguments(p: argparse.ArgumentParser) -> None:
    default = PreferenceConfig(base=BOOK)
    p.add_argument("base", help="the instruction model to start from: a finetune-instruct run "
                                "directory (chapter 7's) or a model directory")
    p.add_argument("--out", type=Path, required=True, help="run directory (absent or empty)")
    p.add_argument("--config", type=Path, help="JSON file with PreferenceConfig's keys: an object "
                                               "'train' (TrainConfig), beta, an object 'pairs' "
                                               "(PairsConfig)")
    p.add_argument("--max-steps", type=positive_int, help=f"default: {default.train.max_steps}")
    p.add_argument("--lr", type=positive_float, help=f"peak learning rate (default: "
                                                     f"{default.train.lr:g}); sets min_lr to lr/10")
    p.add_argument("--batch-size", type=positive_int, help=f"pairs per step (default: "
                                                           f"{default.train.batch_size})")
    p.add_argument("--beta", type=positive_float, help=f"DPO's beta (default: {default.beta:g})")
    p.add_argument("--seed", type=int, help=f"seed of the batches (default: {default.train.seed})")
    p.add_argument("--device", help=DEVICE_HELP)


@command("finetune-preference", "tune an instruction model on preference pairs with DPO "
                                "(chapter 8)", _finetune_preference_arguments)
def finetune_preference(args: argparse.Namespace) -> None:
    cfg = overridden(load_config(args.config, PreferenceConfig(base=args.base)), {
        "train.max_steps": args.max_steps, "train.lr": args.lr,
        "train.min_lr": args.lr and args.lr / 10, "train.batch_size": args.batch_size,
        "train.seed": args.seed, "beta": args.beta})
    require_empty(args.out)
    with created(args.out, PREFERENCE_KIND, cfg) as run, \
            logging_to(run, cfg.train.max_steps, "finetune-preference") as on_log:
        results = preference.finetune_preference(cfg, run, device=args.device, on_log=on_log)
    pairs, rules = results.evaluations["held-out pairs"], results.evaluations["rule-checked"]
    test = results.evaluations["test split"]
    print(f"held-out pairs: reward accuracy {pairs['reward_accuracy']:.1%} over {pairs['pairs']} "
          f"pairs; rule accuracy {rules['accuracy_base']:.1%} -> {rules['accuracy']:.1%}; "
          f"KL from the reference {test['kl_from_reference']:.4f} nats/token; "
          f"model in {run.model_dir}")


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


def run_handler(prog: str, args: argparse.Namespace) -> int:
    """Run args.handler(args); a user error becomes one line on stderr and exit status 2."""
    try:
        args.handler(args)
    except USER_ERRORS as e:
        message = " ".join(str(e).split("\n"))
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit status."""
    args = build_parser().parse_args(argv)
    return run_handler(f"gpt2-core {args.command}", args)
