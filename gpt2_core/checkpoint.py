"""Training checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint is a directory ``ckpt-0001000/`` holding

* ``model.safetensors``     the model's weights (tied weights stored once);
* ``optimizer.safetensors`` the optimizer's per-parameter tensors (AdamW: step, exp_avg, exp_avg_sq);
* ``rng.safetensors``       PyTorch's CPU and CUDA generator states;
* ``state.json``            step, configs, optimizer hyper-parameters, Python/NumPy RNG states,
                            caller extras, and the sha256 of each tensor file.

It is written into a hidden temporary directory, flushed to disk and renamed into place only
when complete, so a crash mid-write leaves no checkpoint that a resume could pick up. Loading
re-hashes every file and refuses one that differs (truncated, corrupt, or from another
checkpoint); `latest_checkpoint` skips such a checkpoint for the newest intact one and says so
on stderr.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from gpt2_core.errors import CheckpointError
from gpt2_core.files import atomic_directory, sha256_of, strict_json

CHECKPOINT_DIR = re.compile(r"^ckpt-(\d{7,})$")
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return tensors


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def save_checkpoint(directory: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, config: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `step` under `directory` atomically; return its path."""
    directory = Path(directory)
    target = directory / f"ckpt-{step:07d}"
    if target.exists():
        raise FileExistsError(f"checkpoint {target} already exists; refusing to overwrite it")
    with atomic_directory(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        optim_tensors, optim_json = _optimizer_tensors(optimizer)
        save_file(optim_tensors, str(tmp / "optimizer.safetensors"))
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        state = {"step": step, "config": config, "extra": extra or {}, "optimizer": optim_json,
                 "rng": _python_rng_state(),
                 "sha256": {name: sha256_of(tmp / name) for name in TENSOR_FILES}}
        (tmp / "state.json").write_text(strict_json(state, indent=1), encoding="utf-8")
    return target


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints under `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and CHECKPOINT_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_DIR.match(p.name).group(1)))


def latest_checkpoint(directory: str | Path, *, set_aside: bool = False) -> Path | None:
    """The newest intact checkpoint under `directory` (`read_state` accepts it), or None.

    A newer, broken checkpoint (a power loss, a corrupt file) is skipped with a line on stderr
    naming it and why; with `set_aside=True` it is also renamed to ``broken-ckpt-...``, so that
    training can write that step again.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            read_state(path)
            return path
        except CheckpointError as e:
            moved = ""
            if set_aside:
                earlier = len(list(path.parent.glob(f"broken-{path.name}*")))
                aside = path.with_name(f"broken-{path.name}" + (f"-{earlier}" if earlier else ""))
                path.rename(aside)
                moved = f"; moved to {aside.name}"
            print(f"skipping checkpoint {path}: {' '.join(str(e).split())}{moved}",
                  file=sys.stderr)
    return None


def read_state(path: str | Path) -> dict[str, Any]:
    """The JSON part of checkpoint `path`, after checking every tensor file's sha256."""
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {state_file.name} is missing")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{state_file}: invalid JSON at line {e.lineno} ({e.msg})") from e
    hashes = state.get("sha256") if isinstance(state, dict) else None
    if not isinstance(hashes, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{state_file}: not a checkpoint state (needs 'step' and 'sha256')")
    for name in TENSOR_FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_of(file) != hashes.get(name):
            raise CheckpointError(f"{file} is corrupt or truncated: its sha256 differs from state.json")
    return state


def load_checkpoint(path: str | Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore `model` (and `optimizer`, RNG states) from checkpoint `path`; return its JSON state."""
    path = Path(path)
    state = read_state(path)
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    except (SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"{path / 'model.safetensors'} does not fit this model: {e}") from e
    if missing or unexpected:
        raise CheckpointError(f"{path / 'model.safetensors'} does not fit this model: "
                              f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}")
    if optimizer is not None:
        tensors = load_file(str(path / "optimizer.safetensors"))
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            _, param_id, name = key.split(".", 2)
            per_param.setdefault(int(param_id), {})[name] = value
        for key, value in state["optimizer"]["scalars"].items():
            param_id, name = key.split(".", 1)
            per_param.setdefault(int(param_id), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer"]["param_groups"]})
    if restore_rng:
        rng = load_file(str(path / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        version, internal, gauss = state["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return state
