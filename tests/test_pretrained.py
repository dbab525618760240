"""gpt2_core.model <-> Hugging Face GPT-2: logits parity both ways, padding, and broken checkpoints."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from gpt2_core import data, hub
from gpt2_core.model import GPT, CheckpointError, GPTConfig, from_pretrained, save_pretrained

CONFIGS = [  # (n_layer, n_head, n_embd, block_size, vocab_size)
    (1, 1, 8, 8, 11),
    (2, 2, 16, 16, 50),
    (3, 4, 32, 12, 101),
    (2, 3, 24, 32, 257),
]


def hf_model(transformers, n_layer, n_head, n_embd, block_size, vocab_size, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size,
                                  vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():   # random biases and LayerNorm gains too, so every tensor is tested
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def batch(vocab_size, block_size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (3, block_size), generator=g)


@pytest.mark.parametrize("shape", CONFIGS)
def test_hf_to_ours(transformers_module, shape, tmp_path):
    hf = hf_model(transformers_module, *shape)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = from_pretrained(tmp_path)
    assert not ours.training
    idx = batch(shape[4], shape[3])
    with torch.no_grad():
        ref = hf(idx, labels=idx)
        logits = ours(idx)
    assert (logits - ref.logits).abs().max().item() < 1e-5
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, shape[4]), idx[:, 1:].reshape(-1))
    assert abs(loss.item() - ref.loss.item()) < 1e-5


@pytest.mark.parametrize("shape", CONFIGS)
def test_ours_to_hf(transformers_module, shape, tmp_path):
    n_layer, n_head, n_embd, block_size, vocab_size = shape
    torch.manual_seed(2)
    ours = randomize(GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                                   n_head=n_head, n_embd=n_embd))).eval()
    save_pretrained(ours, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers_module.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = batch(vocab_size, block_size, seed=3)
    with torch.no_grad():
        ref = hf(idx, labels=idx)
        logits = ours(idx)
    assert (logits - ref.logits).abs().max().item() < 1e-5
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab_size), idx[:, 1:].reshape(-1))
    assert abs(loss.item() - ref.loss.item()) < 1e-5
    again = from_pretrained(tmp_path)
    assert torch.equal(again(idx), logits)


def test_left_padding_matches_hf(transformers_module, tmp_path):
    hf = hf_model(transformers_module, 2, 2, 16, 16, 50)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    idx = batch(50, 10)
    mask = torch.ones_like(idx)
    mask[1, :3] = 0
    mask[2, :6] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    real = mask.bool()
    with torch.no_grad():
        for kwargs in ({"position_ids": pos}, {}):   # explicit positions, and the arange default
            ref = hf(idx, attention_mask=mask, **kwargs).logits
            logits = ours(idx, attention_mask=mask, **kwargs)
            assert (logits[real] - ref[real]).abs().max().item() < 1e-5


def test_keys_without_prefix_with_mask_buffers_and_tied_head(transformers_module, tmp_path):
    hf = hf_model(transformers_module, 2, 2, 16, 16, 50)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(2):   # the buffers the original OpenAI upload carries
        renamed[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
        renamed[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    renamed["lm_head.weight"] = renamed["wte.weight"].clone()
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    idx = batch(50, 16)
    with torch.no_grad():
        assert (from_pretrained(tmp_path)(idx) - hf(idx).logits).abs().max().item() < 1e-5

    renamed["lm_head.weight"] = renamed["lm_head.weight"] + 1
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        from_pretrained(tmp_path)


def test_overrides(tmp_path):
    save_pretrained(GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)), tmp_path)
    assert from_pretrained(tmp_path, dropout=0.25).config.dropout == 0.25
    with pytest.raises(TypeError, match="unknown GPTConfig fields"):
        from_pretrained(tmp_path, n_embed=8)
    with pytest.raises(CheckpointError, match=r"missing keys \['transformer.h.1"):
        from_pretrained(tmp_path, n_layer=2)


@pytest.fixture
def good_dir(tmp_path):
    directory = tmp_path / "ckpt"
    save_pretrained(GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8)), directory)
    return directory


def test_truncated_and_corrupt_weights_are_named(good_dir):
    path = good_dir / "model.safetensors"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        from_pretrained(good_dir)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        from_pretrained(good_dir)


def test_wrong_shape_names_the_key(good_dir):
    config = json.loads((good_dir / "config.json").read_text())
    config["vocab_size"] = 21
    (good_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'transformer.wte.weight' has shape \(20, 8\), expected \(21, 8\)"):
        from_pretrained(good_dir)


def test_transposed_conv1d_shape_is_reported_in_file_layout(good_dir):
    tensors = load_file(good_dir / "model.safetensors")
    tensors["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(32, 8)   # (out, in): not transposed
    save_file(tensors, good_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'transformer.h.0.mlp.c_fc.weight' has shape \(32, 8\), expected \(8, 32\)"):
        from_pretrained(good_dir)


def test_missing_and_unexpected_keys(good_dir):
    tensors = load_file(good_dir / "model.safetensors")
    del tensors["transformer.ln_f.bias"]
    tensors["transformer.h.0.attn.q_attn.weight"] = torch.zeros(8, 8)
    save_file(tensors, good_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing keys \['transformer.ln_f.bias'\]; "
                                              r"unexpected keys \['transformer.h.0.attn.q_attn.weight'\]"):
        from_pretrained(good_dir)


@pytest.mark.parametrize("field,value", [("activation_function", "relu"), ("n_inner", 7),
                                         ("scale_attn_by_inverse_layer_idx", True),
                                         ("tie_word_embeddings", False), ("model_type", "llama")])
def test_unsupported_config_is_refused(good_dir, field, value):
    config = json.loads((good_dir / "config.json").read_text())
    config[field] = value
    (good_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=field):
        from_pretrained(good_dir)


def test_missing_files_and_bad_json(good_dir):
    (good_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        from_pretrained(good_dir)
    (good_dir / "config.json").write_text(json.dumps({"n_embd": 8}))
    with pytest.raises(CheckpointError, match="missing required field"):
        from_pretrained(good_dir)
    (good_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        from_pretrained(good_dir)
    save_pretrained(GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)), good_dir)
    (good_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        from_pretrained(good_dir)
    with pytest.raises(CheckpointError, match="neither a directory nor one of"):
        from_pretrained(good_dir / "nowhere")


def test_save_is_atomic_and_refuses_what_hf_cannot_load(tmp_path):
    with pytest.raises(CheckpointError, match="bias=False"):
        save_pretrained(GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False)),
                        tmp_path)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
    save_pretrained(model, tmp_path / "a")
    save_pretrained(model, tmp_path / "a")   # overwriting is fine and leaves no temporary files
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "model.safetensors"]
    assert "lm_head.weight" not in load_file(tmp_path / "a" / "model.safetensors")


def test_hub_names_offline_give_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_CORE_MIRROR", str(tmp_path))
    with pytest.raises(data.DataError, match="GPT2_CORE_OFFLINE forbids downloads.*GPT2_CORE_MIRROR"):
        from_pretrained("gpt2")
    with pytest.raises(data.DataError, match="no pinned sha256.*gpt2-medium/resolve/main/config.json"):
        from_pretrained("gpt2-medium")
    bad = tmp_path / "gpt2-model.safetensors"
    bad.write_bytes(b"not the weights")
    with pytest.raises(data.ChecksumError, match="gpt2-weights"):
        hub.fetch_weights("gpt2")
    with pytest.raises(data.DataError, match="unknown model"):
        hub.fetch_weights("gpt5")
