"""GPT-2 checkpoints in the Hugging Face layout: `config.json` and `model.safetensors` on disk.

Hand-written plumbing for `gpt2_core.model.from_pretrained` and `save_pretrained` (chapter 3),
which map the tensors' names and layouts between Hugging Face's GPT-2 and ours. This module
does the rest: it translates `config.json` to and from `GPTConfig`'s fields (refusing GPT-2
variants the book's model does not compute), checks that a checkpoint directory holds both
files, reads safetensors with an error that names a truncated or corrupt file, and writes a
checkpoint atomically, each file under a temporary name renamed into place when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from gpt2_core.errors import CheckpointError
from gpt2_core.files import atomic_write, atomic_write_json


def config_dict(config: Any) -> dict:
    """The Hugging Face GPT-2 config.json contents for a `GPTConfig`."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size,
        "n_ctx": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon, "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": config.vocab_size - 1, "eos_token_id": config.vocab_size - 1,
    }


def config_fields(hf: dict, source: str = "config.json") -> dict[str, Any]:
    """`GPTConfig` keyword arguments from a Hugging Face GPT-2 config dict.

    Refuses variants the book's GPT cannot compute exactly (another activation or MLP
    width, unscaled or layer-scaled attention, cross-attention, an untied LM head).
    """
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type is {hf.get('model_type')!r}, not 'gpt2'")
    try:
        d = int(hf["n_embd"])
        fields = dict(vocab_size=int(hf["vocab_size"]), block_size=int(hf["n_positions"]),
                      n_layer=int(hf["n_layer"]), n_head=int(hf["n_head"]), n_embd=d,
                      dropout=float(hf.get("resid_pdrop", 0.0)), bias=True,
                      layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)))
    except KeyError as e:
        raise CheckpointError(f"{source}: missing required field {e.args[0]!r}") from None
    activation = hf.get("activation_function", "gelu_new")
    unsupported = {
        "activation_function": activation not in ("gelu_new", "gelu_pytorch_tanh"),
        "n_inner": hf.get("n_inner") not in (None, 4 * d),
        "scale_attn_weights": not hf.get("scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
        "add_cross_attention": bool(hf.get("add_cross_attention", False)),
        "tie_word_embeddings": not hf.get("tie_word_embeddings", True),
    }
    bad = [f"{k}={hf.get(k)!r}" for k, is_bad in unsupported.items() if is_bad]
    if bad:
        raise CheckpointError(f"{source}: unsupported GPT-2 variant ({', '.join(bad)})")
    return fields


def read_directory(directory: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """`GPTConfig` keyword arguments from `directory`/config.json, and the path of its
    model.safetensors; CheckpointError if either file is missing or config.json is bad."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from e
    fields = config_fields(hf, str(config_path))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
        raise CheckpointError(f"{directory} has no model.safetensors (found: {found}); only "
                              "single-file safetensors checkpoints are supported")
    return fields, weights


def read_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a safetensors file; CheckpointError if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file, maybe truncated or "
                              f"corrupt ({type(e).__name__}: {e})") from e


def write_directory(directory: str | os.PathLike, tensors: dict[str, Tensor],
                    config: dict) -> Path:
    """Write model.safetensors (`tensors`) and config.json (`config`), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "model.safetensors",
                 lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    atomic_write_json(directory / "config.json", config, indent=2)
    return directory
