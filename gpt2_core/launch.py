"""Pretraining entry point for one CPU, one GPU, or many GPUs/nodes through ``torchrun``.

    python -m gpt2_core.launch prepare --dataset tinyshakespeare --out data/shakespeare
    python -m gpt2_core.launch prepare corpus.jsonl --out data/web --num-proc 16
    python -m gpt2_core.launch train --data data/shakespeare --out runs/shakespeare
    torchrun --nproc_per_node=8 -m gpt2_core.launch train --data data/web --model gpt2 \\
        --batch-size 512 --block-size 1024 --dtype bfloat16 --compile

``train`` is ``gpt2-core pretrain`` under another name: the same flags, checks, errors (one line,
exit status 2) and handling of a finished run (`gpt2_core.cli.pretrain`), so
``torchrun ... -m gpt2_core pretrain --data ...`` does the same. ``prepare`` is ``gpt2-core
prepare`` (`gpt2_core.prepare`) with the older form ``--dataset NAME`` for a registered data set;
for one that is a single text (tinyshakespeare) it cuts the text into documents at blank lines
unless ``--separator`` says otherwise, since the train/validation split is by document.
"""

from __future__ import annotations

import argparse
import sys

from gpt2_core import cli, data
from gpt2_core import prepare as prepare_module
from gpt2_core.pretrained import BOOK_RECIPE


def prepare(args: argparse.Namespace) -> None:
    """`gpt2_core.prepare.run`, with the older ``--dataset NAME`` mapped onto SOURCE."""
    if args.source is None:
        args.source = args.dataset
        one_text = args.source in data.REGISTRY and data.REGISTRY[args.source].filename.endswith(
            ".txt")
        if one_text and args.separator is None:
            args.separator = r"\n\n"
    prepare_module.run(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser: ``prepare`` and ``train`` (the parser of ``gpt2-core pretrain``)."""
    parser = argparse.ArgumentParser(prog="python -m gpt2_core.launch",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help=prepare_module.HELP)
    p.add_argument("source", nargs="?", help=prepare_module.SOURCE_HELP)
    p.add_argument("--dataset", default=BOOK_RECIPE.dataset,
                   help="without SOURCE: a registered data set (default: %(default)s)")
    prepare_module.add_options(p)
    p.set_defaults(handler=prepare)
    pretrain = cli.COMMANDS["pretrain"]
    t = commands.add_parser("train", help=f"the same as gpt2-core pretrain: {pretrain.help}")
    pretrain.arguments(t)
    t.set_defaults(handler=pretrain.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv`; return the exit status (2 and one line for a user error)."""
    args = build_parser().parse_args(argv)
    return cli.run_handler(f"python -m gpt2_core.launch {args.command}", args)


if __name__ == "__main__":
    sys.exit(main())
