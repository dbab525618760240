"""Model cards and exports of a run: what a finished run tells its readers, and the files it ships.

`model_card(run)` writes a Markdown card from the run record (data, model, training, evaluation,
use and limits); `export_model(run, out)` writes the run's model in the Hugging Face GPT-2 layout
with its tokenizer and card.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from gpt2_core import __version__, data
from gpt2_core.checkpoint import latest_checkpoint, load_checkpoint, read_state
from gpt2_core.files import atomic_directory
from gpt2_core.runs import (CARD_FILE, CLASSIFIER_DIR, METRICS_FILE, MODEL_DIR, TOKENIZER_FILE, Run,
                            RunError)


def parameter_count(model_config: dict) -> int:
    """Parameters of a GPT with this (JSON) GPTConfig, tied weights once; nothing is allocated."""
    from gpt2_core.model import GPT, GPTConfig

    with torch.device("meta"):
        return GPT(GPTConfig(**model_config)).num_parameters()


LIMITS = (
    "For learning and experiments: it shows what a model of this size learns from this data. It is "
    "small and trained on one narrow text, so it imitates that text's surface and knows nothing "
    "reliable; do not use its output as fact or in any product. It inherits the biases and the age "
    "of its training text, and it was not evaluated for harmful content."
)
CLASSIFIER_LIMITS = (
    "For learning and experiments: it labels short English text messages as ham or spam, learned "
    "from about a thousand SMS messages of the 2000s (the UCI SMS Spam Collection). It has seen no "
    "other language, medium or decade, and was evaluated only on the held-out messages in eval.json; "
    "do not use it to filter anyone's messages."
)
INSTRUCT_LIMITS = (
    "For learning and experiments: it shows how instruction fine-tuning changes a model of this size. "
    "It follows the prompt format it was tuned on, but a small model knows nothing reliable: do not "
    "use its answers as fact or in any product. It inherits the biases of its base model's text and "
    "of the instruction data, and it was not evaluated for harmful content."
)
PREFERENCE_LIMITS = (
    "For learning and experiments: it shows how preference tuning (DPO) changes an instruction model of "
    "this size. Its preference pairs were made offline from reference answers and the model's own "
    "sampled answers, not by people; a small model knows nothing reliable: do not use its answers as "
    "fact or in any product. It inherits the biases of its base model's text and of the instruction "
    "data, and it was not evaluated for harmful content."
)
# kind -> (what the card calls the model, its limits, its data set); other kinds are language
# models trained on the data set their config names
KINDS = {
    "finetune-classifier": ("text classifier", CLASSIFIER_LIMITS, "sms-spam"),
    "finetune-instruct": ("instruction-following language model", INSTRUCT_LIMITS,
                          "instruction-data"),
    "finetune-preference": ("preference-tuned instruction-following language model",
                            PREFERENCE_LIMITS, "instruction-data"),
}


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _data_section(name: str, config: dict) -> list[str]:
    dataset = data.REGISTRY.get(name)
    if dataset is None:
        lines = [f"- `{name}` (not in gpt2_core's data registry)"]
    else:
        lines = [f"- `{name}`: {dataset.description}",
                 f"- file `{dataset.filename}`, sha256 `{dataset.sha256}`",
                 f"- license: {dataset.license}"]
    if "train_fraction" in config:
        lines.append(f"- the first {config['train_fraction']:.0%} of the text trains the tokenizer "
                     "and the model; the rest is the validation split")
    return ["## Data", "", *lines, ""]


def _model_section(m: dict, labels: list[str] | None) -> list[str]:
    """Shape, size and files of a language model, or (`labels` given) of a classifier."""
    shape = ", ".join(f"{k}={m[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"))
    tokenizer = "`tokenizer.json` is gpt2_core's byte-level BPE (`gpt2_core.tokenizer.BPETokenizer.load`)"
    if labels is None:
        return ["## Model", "", f"- {shape}",
                f"- {parameter_count(m):,} parameters (the LM head is tied to the token embedding)",
                f"- `model.safetensors` + `config.json` in the Hugging Face GPT-2 layout; {tokenizer}", ""]
    head = m["n_embd"] * len(labels) + len(labels)
    size = (f"{parameter_count(m) + head:,} parameters: the LM head is replaced by a {len(labels)}-way "
            f"classification head ({', '.join(labels)}) read at each message's last token")
    files = (f"`{CLASSIFIER_DIR}/` in the run: `model.safetensors` + `classifier.json` "
             f"(`gpt2_core.classifier.load_classifier`); {tokenizer}")
    return ["## Model", "", f"- {shape}", f"- {size}", f"- {files}", ""]


def _training_section(metrics: list[dict], step: int | None) -> list[str]:
    last = metrics[-1]
    weights = f" (these weights: step {step})" if step is not None else ""
    lines = ["## Training", "", f"- {last['step']} optimizer steps{weights}"]
    if "elapsed_s" in last:
        lines.append(f"- training time {last['elapsed_s']:.1f} s")
    logged = ", ".join(f"{k} {_format(v)}" for k, v in last.items() if k != "step")
    return [*lines, f"- last logged: {logged}", f"- every step's metrics: `{METRICS_FILE}` in the run", ""]


def _evaluation_section(evaluations: dict[str, dict]) -> list[str]:
    """A table of the numbers and strings in eval.json (lists and objects stay in the file)."""
    keys = list(dict.fromkeys(k for results in evaluations.values() for k, v in results.items()
                              if isinstance(v, (int, float, str))))
    rows = [f"| {name} | " + " | ".join(_format(results.get(k, "")) for k in keys) + " |"
            for name, results in evaluations.items()]
    return ["## Evaluation", "", "| text | " + " | ".join(keys) + " |", "|---" * (1 + len(keys)) + "|",
            *rows, ""]


def model_card(run: Run, *, step: int | None = None, model: dict | None = None) -> str:
    """A Markdown model card from the run record: data, model, training, evaluation, use and limits.

    `step`: the card describes the weights of that step (metrics after it are left out).
    `model`: the model's GPTConfig as JSON, when the run does not hold it yet.
    """
    config = run.config
    metrics = [r for r in run.metrics() if step is None or r["step"] <= step]
    what, limits, dataset = KINDS.get(run.kind, ("language model", LIMITS, config.get("dataset")))
    # an absolute path is named by its last part: where it lies is the machine's business
    source = config.get("base")
    if source is not None and Path(source).is_absolute():
        source = Path(source).name
    base = f", fine-tuned from `{source}`" if source is not None else ""
    intro = (f"A GPT-2-architecture {what} made by `gpt2_core` ({run.kind} run{base}, "
             f"gpt2_core {__version__}, created {run.created}).")
    lines = [f"# {run.directory.name}", "", intro, ""]
    if dataset is not None:
        lines += _data_section(dataset, config)
    model_config = model or run.model_config()
    if model_config is not None:
        lines += _model_section(model_config, run.labels())
    if metrics:
        lines += _training_section(metrics, step)
    if run.evaluations:
        lines += _evaluation_section(run.evaluations)
    lines += ["## Configuration", "", "```json", json.dumps(config, indent=1), "```", "",
              "## Intended use and limits", "", limits, ""]
    return "\n".join(lines)


# --- export ------------------------------------------------------------------------------------
def _final_weights(run: Run) -> tuple[torch.nn.Module, int | None]:
    """The model of the run's newest checkpoint and its step, or, for a run without checkpoints
    (a fine-tuning run), the model in its model/ directory and None."""
    from gpt2_core.model import GPT, GPTConfig, from_pretrained

    checkpoint = latest_checkpoint(run.checkpoints)
    if checkpoint is not None:
        state = read_state(checkpoint)
        model = GPT(GPTConfig(**state["config"]["model"]))
        load_checkpoint(checkpoint, model=model, restore_rng=False)
        return model, state["step"]
    if (run.model_dir / "model.safetensors").is_file():
        return from_pretrained(run.model_dir), None
    raise RunError(f"{run.directory} holds no checkpoint and no {MODEL_DIR}/ to export")


def export_model(run: Run, out: str | Path, *, model: torch.nn.Module | None = None) -> Path:
    """Write `model`, else the run's newest checkpoint, else its model/, to `out` (absent or empty)
    in the Hugging Face GPT-2 layout.

    `out` gets config.json, model.safetensors, the run's tokenizer.json (when it has one) and the
    model card README.md; it is assembled in a temporary directory and renamed into place.
    """
    from gpt2_core.model import save_pretrained

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} already exists and is not empty; refusing to overwrite it")
    model, step = (model, None) if model is not None else _final_weights(run)
    with atomic_directory(out) as tmp:
        save_pretrained(model, tmp)
        if (run.directory / TOKENIZER_FILE).is_file():
            shutil.copyfile(run.directory / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        card = model_card(run, step=step, model=dataclasses.asdict(model.config))
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return out
