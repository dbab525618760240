"""OpenAI's GPT-2 weights from the Hugging Face hub, through `gpt2_core.data`'s machinery.

`fetch_weights(name)` returns a verified local `model.safetensors` for one of the released
sizes, looked up like every data set: the cache (``$GPT2_CORE_CACHE``), then the mirror folder
(``$GPT2_CORE_MIRROR``, as ``<name>-model.safetensors``), then a download from a pinned hub
revision (not when ``$GPT2_CORE_OFFLINE`` is set). The file must match its sha256; downloads are
written to a temporary name and renamed into place. These files are not in `data.REGISTRY`:
they are model weights, not data sets.
"""

from __future__ import annotations

from pathlib import Path

from gpt2_core import data

HUB = "https://huggingface.co"
HF_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}

WEIGHTS: dict[str, data.DataSet] = {
    "gpt2": data.DataSet(
        name="gpt2-weights",
        filename="gpt2-model.safetensors",
        sha256="248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
        urls=(f"{HUB}/openai-community/gpt2/resolve/607a30d783dfa663caf39e06633721c8d4cfcd7e/model.safetensors",),
        license="MIT (OpenAI, GPT-2 124M weights)",
        description="GPT-2 124M weights, Hugging Face safetensors layout (548,105,171 bytes).",
    ),
}


def _manual_instructions(name: str) -> str:
    repo = HF_REPOS[name]
    return (f"Download {HUB}/{repo}/resolve/main/model.safetensors and {HUB}/{repo}/resolve/main/"
            "config.json into one directory and call gpt2_core.model.from_pretrained(that_directory).")


def fetch_weights(name: str) -> Path:
    """Path of a verified local model.safetensors for OpenAI's GPT-2 `name` (e.g. "gpt2")."""
    if name not in HF_REPOS:
        raise data.DataError(f"unknown model {name!r}; known: {', '.join(HF_REPOS)}")
    dataset = WEIGHTS.get(name)
    if dataset is None:
        raise data.DataError(f"{name}: no pinned sha256 for its weights in gpt2_core.hub, so they are "
                             "not downloaded automatically. " + _manual_instructions(name))
    try:
        return data.fetch_dataset(dataset)
    except data.ChecksumError:
        raise
    except data.DataError as e:
        raise data.DataError(f"{e} Or: {_manual_instructions(name)}") from e
