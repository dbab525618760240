"""Run records: one directory per training run, so that every result can be traced to its inputs.

A run directory holds

* ``config.json``   the run's kind (e.g. "pretrain") and its resolved configuration;
* ``metrics.jsonl`` one JSON object per logged step, appended and flushed as training goes;
* ``eval.json``     evaluation results, one entry per evaluated text (e.g. "validation");
* ``tokenizer.json`` the run's tokenizer, when it trains or fine-tunes with one in gpt2_core's BPE format;
* ``checkpoints/``  training checkpoints (`gpt2_core.checkpoint`), the out_dir of `train()` (pretraining);
* ``model/``        the exported model in the Hugging Face GPT-2 layout, with its model card;
* ``classifier/``   instead of model/ in a classifier run: `gpt2_core.finetune.save_classifier`'s files;
* ``README.md``     the model card.

Nothing in a run is overwritten silently. Creating a run in a non-empty directory fails unless
resuming, and resuming requires the stored configuration to equal the new one. Resuming rewinds
the run to its newest checkpoint: metrics lines of later steps are dropped, because those steps
are trained (and logged) again. JSON files are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gpt2_core import __version__, data
from gpt2_core.files import atomic_directory, atomic_write, atomic_write_text
from gpt2_core.checkpoint import (
    CHECKPOINT_DIR,
    latest_checkpoint,
    load_checkpoint,
    read_state,
)

CONFIG_FILE, METRICS_FILE, EVAL_FILE, CARD_FILE = "config.json", "metrics.jsonl", "eval.json", "README.md"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS_DIR, MODEL_DIR, CLASSIFIER_DIR = "checkpoints", "model", "classifier"


class RunError(RuntimeError):
    """A run directory cannot be created, resumed, read or written as asked."""


class ConfigError(ValueError):
    """A configuration file names an unknown key, has a value of the wrong type, or is invalid."""


# --- configurations <-> JSON -------------------------------------------------------------------
def config_to_dict(config: Any) -> Any:
    """A JSON-ready copy of `config`: dataclasses become dicts, tuples lists, paths strings."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether JSON `value` fits a field annotated `annotation` (bool is not an int here)."""
    if annotation is Any:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(annotation) or annotation
    if origin is tuple:
        return isinstance(value, list)
    return isinstance(value, origin)


def config_from_dict(base: Any, values: dict, *, source: str, prefix: str = "") -> Any:
    """A copy of dataclass `base` with the fields in `values` replaced (nested dataclasses: dicts).

    Raises ConfigError naming `source` and the dotted key for unknown keys, wrong types, and
    values that the dataclass itself rejects.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} must be a JSON object, "
                          f"got {type(values).__name__}")
    hints = typing.get_type_hints(type(base))
    known = [f.name for f in dataclasses.fields(base)]
    updates = {}
    for key, value in values.items():
        name = prefix + key
        if key not in known:
            raise ConfigError(f"{source}: unknown key {name!r}; known keys here: {', '.join(known)}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            updates[key] = config_from_dict(current, value, source=source, prefix=name + ".")
        elif not _accepts(hints[key], value):
            raise ConfigError(f"{source}: key {name!r} must be {_type_name(hints[key])}, "
                              f"got {type(value).__name__} {value!r}")
        elif hints[key] is float:
            updates[key] = float(value)
        else:
            updates[key] = tuple(value) if isinstance(value, list) else value
    try:
        return dataclasses.replace(base, **updates)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: invalid {prefix.rstrip('.') or 'config'}: {e}") from None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two JSON-ready configs, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in config_diff(old.get(key), new.get(key), f"{prefix}{key}.")]
    if old == new:
        return []
    return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


# --- files -------------------------------------------------------------------------------------
def _dump(obj: Any) -> str:
    return json.dumps(config_to_dict(obj), indent=1) + "\n"


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file; a corrupt line raises RunError naming file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RunError(f"{path}, line {number}: not a JSON record ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise RunError(f"{path}, line {number}: expected a JSON object with an integer 'step'")
            records.append(record)
    return records


def columns(records: list[dict]) -> dict[str, list]:
    """Metrics records as columns, e.g. for plotting; None where a record lacks a key."""
    keys = list(dict.fromkeys(key for record in records for key in record))
    return {key: [record.get(key) for record in records] for key in keys}


# --- runs --------------------------------------------------------------------------------------
def is_run(directory: str | Path) -> bool:
    """Whether `directory` holds a run record (config.json and metrics.jsonl)."""
    directory = Path(directory)
    return (directory / CONFIG_FILE).is_file() and (directory / METRICS_FILE).is_file()


class Run:
    """A run directory: its configuration, metrics log, evaluations, checkpoints and model."""

    def __init__(self, directory: Path, record: dict):
        self.directory = directory
        self.kind: str = record["kind"]
        self.config: dict = record["config"]
        self.created: str = record["created"]
        self._last_step = max((r["step"] for r in self.metrics()), default=0)

    @classmethod
    def create(cls, directory: str | Path, kind: str, config: Any, *, resume: bool = False) -> Run:
        """Start a run in `directory` (absent or empty), or, with resume=True, continue the one there.

        Resuming checks that the stored kind and config equal the new ones and drops the metrics
        of steps after the newest checkpoint (they will be trained and logged again).
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise RunError(f"{directory} is a file, not a run directory")
        if directory.is_dir() and any(directory.iterdir()):
            if not resume:
                raise RunError(f"{directory} is not empty; resume the run there (--resume) "
                               "or choose a new directory")
            run = cls.open(directory)
            run._check_same(kind, config)
            run._rewind()
            return run
        directory.mkdir(parents=True, exist_ok=True)
        record = {"kind": kind, "config": config_to_dict(config), "gpt2_core": __version__,
                  "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        atomic_write_text(directory / CONFIG_FILE, _dump(record))
        (directory / METRICS_FILE).touch()
        return cls(directory, record)

    @classmethod
    def open(cls, directory: str | Path) -> Run:
        """The run recorded in `directory`."""
        directory = Path(directory)
        if not is_run(directory):
            raise RunError(f"{directory} is not a run directory (it needs {CONFIG_FILE} and {METRICS_FILE})")
        record = read_json(directory / CONFIG_FILE)
        if not isinstance(record, dict) or not {"kind", "config", "created"} <= set(record):
            raise RunError(f"{directory / CONFIG_FILE}: not a run config (needs 'kind', 'config', 'created')")
        return cls(directory, record)

    def _check_same(self, kind: str, config: Any) -> None:
        differences = config_diff({"kind": self.kind, "config": self.config},
                                  {"kind": kind, "config": json.loads(_dump(config))})
        if differences:
            raise RunError(f"cannot resume {self.directory}: its config differs from the new one in "
                           + "; ".join(differences))

    def _rewind(self) -> None:
        checkpoint = latest_checkpoint(self.checkpoints)
        step = int(CHECKPOINT_DIR.match(checkpoint.name).group(1)) if checkpoint else 0
        kept = [r for r in self.metrics() if r["step"] <= step]
        atomic_write_text(self.directory / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))
        self._last_step = kept[-1]["step"] if kept else 0

    @property
    def last_step(self) -> int:
        """The step of the last logged record (0 before any)."""
        return self._last_step

    @property
    def checkpoints(self) -> Path:
        """The checkpoint directory: pass it to train() as out_dir."""
        return self.directory / CHECKPOINTS_DIR

    @property
    def model_dir(self) -> Path:
        """Where the finished run's model is exported."""
        return self.directory / MODEL_DIR

    def log(self, record: dict) -> None:
        """Append one step's record (it needs an integer 'step', larger than the last one) and flush."""
        step = record.get("step")
        if not isinstance(step, int) or step <= self._last_step:
            raise RunError(f"{self.directory / METRICS_FILE}: step {step!r} does not follow the last "
                           f"logged step {self._last_step}")
        with open(self.directory / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(config_to_dict(record)) + "\n")
            f.flush()
        self._last_step = step

    def metrics(self) -> list[dict]:
        """Every logged record, in step order."""
        return read_metrics(self.directory / METRICS_FILE)

    def write_file(self, name: str, write: Callable[[Path], object], *, overwrite: bool = False) -> Path:
        """Write file `name` in the run through write(tmp_path), atomically; an existing file is
        replaced only if overwrite=True."""
        path = self.directory / name
        if path.exists() and not overwrite:
            raise RunError(f"{path} already exists; refusing to overwrite it")
        return atomic_write(path, write)

    def write_text(self, name: str, text: str, *, overwrite: bool = False) -> Path:
        """Write text file `name` in the run; see write_file."""
        return self.write_file(name, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)

    def write_json(self, name: str, obj: Any, *, overwrite: bool = False) -> Path:
        """Write `obj` (dataclasses allowed) as JSON file `name`; see write_text."""
        return self.write_text(name, _dump(obj), overwrite=overwrite)

    def read_json(self, name: str) -> Any:
        """Parse JSON file `name` of the run."""
        return read_json(self.directory / name)

    @property
    def evaluations(self) -> dict[str, dict]:
        """eval.json: results per evaluated text ({} before any evaluation)."""
        return self.read_json(EVAL_FILE) if (self.directory / EVAL_FILE).exists() else {}

    def add_evaluation(self, name: str, results: dict, *, overwrite: bool = False) -> None:
        """Record `results` under `name` in eval.json; an existing entry is replaced only if overwrite=True."""
        evaluations = self.evaluations
        if name in evaluations and not overwrite:
            raise RunError(f"{self.directory / EVAL_FILE} already has results for {name!r}; "
                           "refusing to overwrite them")
        self.write_json(EVAL_FILE, {**evaluations, name: results}, overwrite=True)


# --- model card --------------------------------------------------------------------------------
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
KINDS = {  # kind -> (what the card calls the model, its limits); other kinds are language models
    "finetune-classifier": ("text classifier", CLASSIFIER_LIMITS),
    "finetune-instruct": ("instruction-following language model", INSTRUCT_LIMITS),
}


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _data_section(config: dict) -> list[str]:
    name = config["dataset"]
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
             f"(`gpt2_core.finetune.load_classifier`); {tokenizer}")
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


def model_card(run: Run, *, step: int | None = None) -> str:
    """A Markdown model card from the run record: data, model, training, evaluation, use and limits.

    `step`: the card describes the weights of that step (metrics after it are left out).
    """
    config = run.config
    metrics = [r for r in run.metrics() if step is None or r["step"] <= step]
    what, limits = KINDS.get(run.kind, ("language model", LIMITS))
    base = f", fine-tuned from `{config['base']}`" if "base" in config else ""
    intro = (f"A GPT-2-architecture {what} made by `gpt2_core` ({run.kind} run{base}, "
             f"gpt2_core {__version__}, created {run.created}).")
    lines = [f"# {run.directory.name}", "", intro, ""]
    if "dataset" in config:
        lines += _data_section(config)
    if "model" in config:
        lines += _model_section(config["model"], config.get("labels"))
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
        (tmp / CARD_FILE).write_text(model_card(run, step=step), encoding="utf-8")
    return out
