"""Run records: one directory per training run, so that every result can be traced to its inputs.

A run directory holds

* ``config.json``   the run's kind (e.g. "pretrain") and its resolved configuration;
* ``metrics.jsonl`` one JSON object per logged step, appended and flushed as training goes;
* ``eval.json``     evaluation results, one entry per evaluated text (e.g. "validation");
* ``tokenizer.json`` the run's tokenizer, when it trains or fine-tunes with one in gpt2_core's BPE format;
* ``checkpoints/``  training checkpoints (`gpt2_core.checkpoint`), the out_dir of `train()` (pretraining);
* ``model/``        the exported model in the Hugging Face GPT-2 layout, with its model card;
* ``classifier/``   instead of model/ in a classifier run: `gpt2_core.classifier.save_classifier`'s files;
* ``README.md``     the model card (`gpt2_core.publish`).

Nothing in a run is overwritten silently. Creating a run in a non-empty directory fails unless
resuming, and resuming requires the stored configuration to equal the new one. Resuming rewinds
the run to its newest intact checkpoint (a broken newer one is set aside, with a line on stderr):
metrics lines of later steps are dropped, because those steps are trained (and logged) again, and
so is a torn last line (a kill during its write). JSON files are strict JSON (no NaN), written to
a temporary file and renamed into place.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2_core import __version__
from gpt2_core.checkpoint import CHECKPOINT_DIR, latest_checkpoint
from gpt2_core.configs import config_diff, config_to_dict
from gpt2_core.errors import GPT2CoreError
from gpt2_core.files import atomic_write, atomic_write_text, strict_json
from gpt2_core.hf_checkpoint import config_fields

CONFIG_FILE, METRICS_FILE, EVAL_FILE, CARD_FILE = "config.json", "metrics.jsonl", "eval.json", "README.md"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS_DIR, MODEL_DIR, CLASSIFIER_DIR = "checkpoints", "model", "classifier"


class RunError(GPT2CoreError, RuntimeError):
    """A run directory cannot be created, resumed, read or written as asked."""


# --- files -------------------------------------------------------------------------------------
def _dump(obj: Any) -> str:
    return strict_json(config_to_dict(obj), indent=1) + "\n"


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def read_metrics(path: Path, *, torn_end: bool = False) -> list[dict]:
    """The records of a metrics.jsonl file; a corrupt line raises RunError naming file and line.

    `torn_end=True` drops a last line that has no newline and is not JSON (a kill while writing).
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if torn_end and not line.endswith("\n"):
                    break
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
        records = read_metrics(directory / METRICS_FILE, torn_end=True)   # _rewind drops it
        self._last_step = max((r["step"] for r in records), default=0)

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
            run.check_config(kind, config)
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

    def check_config(self, kind: str, config: Any) -> None:
        """Raise RunError unless this run was created for `kind` with `config`."""
        differences = config_diff({"kind": self.kind, "config": self.config},
                                  {"kind": kind, "config": json.loads(_dump(config))})
        if differences:
            raise RunError(f"{self.directory} was made with another config: it differs from the new one in "
                           + "; ".join(differences))

    def _rewind(self) -> None:
        checkpoint = latest_checkpoint(self.checkpoints, set_aside=True)
        step = int(CHECKPOINT_DIR.match(checkpoint.name).group(1)) if checkpoint else 0
        records = read_metrics(self.directory / METRICS_FILE, torn_end=True)
        kept = [r for r in records if r["step"] <= step]
        atomic_write_text(self.directory / METRICS_FILE,
                          "".join(strict_json(r) + "\n" for r in kept))
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

    def model_config(self) -> dict | None:
        """The GPTConfig (as JSON) of the run's model: its recipe's, or the saved model's."""
        if "model" in self.config:
            return self.config["model"]
        classifier = self.directory / CLASSIFIER_DIR / "classifier.json"
        if classifier.is_file():
            return read_json(classifier)["gpt"]
        exported = self.model_dir / CONFIG_FILE
        if exported.is_file():
            return config_fields(read_json(exported), str(exported))
        return None

    def labels(self) -> list[str] | None:
        """A classifier run's class labels; None for a language model."""
        classifier = self.directory / CLASSIFIER_DIR / "classifier.json"
        return read_json(classifier)["labels"] if classifier.is_file() else None

    def step_logger(self, on_log: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
        """A per-step callback: stamps a record with the seconds since this call ('elapsed_s'),
        logs it to this run, then passes it to `on_log`."""
        started = time.perf_counter()

        def log_step(record: dict) -> None:
            record = {**record, "elapsed_s": time.perf_counter() - started}
            self.log(record)
            if on_log is not None:
                on_log(record)

        return log_step

    def log(self, record: dict) -> None:
        """Append one step's record (it needs an integer 'step', larger than the last one) and flush."""
        step = record.get("step")
        if not isinstance(step, int) or step <= self._last_step:
            raise RunError(f"{self.directory / METRICS_FILE}: step {step!r} does not follow the last "
                           f"logged step {self._last_step}")
        try:
            line = strict_json(config_to_dict(record)) + "\n"
        except ValueError:
            bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
            raise RunError(f"step {step}: {', '.join(bad) or 'a value'} is not a finite number "
                           "(training diverged?); metrics are strict JSON") from None
        with open(self.directory / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line)
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


