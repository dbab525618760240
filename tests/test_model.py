"""gpt2_core.model: configs, parameter counts, FLOPs, wiring, masks and the KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from gpt2_core.model import GPT, GPT2_SIZES, GPTConfig, flops_per_token

TINY = GPTConfig(vocab_size=97, block_size=24, n_layer=2, n_head=2, n_embd=16)


class ListCache:
    """A tiny duck-typed KV cache: `length` is read before the layers run."""

    def __init__(self, n_layer):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.length = 0

    def update(self, layer_idx, k, v):
        if self.k[layer_idx] is not None:
            k = torch.cat([self.k[layer_idx], k], dim=2)
            v = torch.cat([self.v[layer_idx], v], dim=2)
        self.k[layer_idx], self.v[layer_idx] = k, v
        return k, v


def forward_cached(model, idx, chunks, **kw):
    cache, out, start = ListCache(model.config.n_layer), [], 0
    for n in chunks:
        mask = kw["attention_mask"][:, :start + n] if "attention_mask" in kw else None
        pos = kw["position_ids"][:, start:start + n] if "position_ids" in kw else None
        out.append(model(idx[:, start:start + n], kv_cache=cache, attention_mask=mask, position_ids=pos))
        cache.length += n
        start += n
    return torch.cat(out, dim=1)


def sizes_on_meta():
    for name in GPT2_SIZES:
        with torch.device("meta"):
            yield name, GPTConfig.from_name(name), GPT(GPTConfig.from_name(name))


def test_parameter_counts_of_the_openai_sizes():
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                "gpt2-xl": 1_557_611_200}
    for name, cfg, model in sizes_on_meta():
        d = cfg.n_embd
        by_hand = cfg.vocab_size * d + cfg.block_size * d + cfg.n_layer * (12 * d * d + 13 * d) + 2 * d
        assert model.num_parameters() == by_hand == expected[name]
        assert model.num_parameters(non_embedding=True) == by_hand - (cfg.vocab_size + cfg.block_size) * d


def test_config_defaults_and_names():
    assert GPTConfig() == GPTConfig.from_name("gpt2")
    assert GPTConfig.from_name("gpt2-xl", dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="unknown model"):
        GPTConfig.from_name("gpt3")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)


@pytest.mark.parametrize("name, seq_len", [("gpt2", 1024), ("gpt2", 64), ("gpt2-medium", 256)])
def test_flops_per_token_equals_torchs_flop_counter(name, seq_len):
    """torch's FlopCounterMode over a forward and a backward pass, on the meta device (shapes
    only); attention goes through the math kernel, whose matmuls the counter sees."""
    cfg = GPTConfig.from_name(name)
    with torch.device("meta"):
        model = GPT(cfg)
        idx = torch.zeros(2, seq_len, dtype=torch.long)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx).sum().backward()
    assert flops_per_token(cfg, seq_len) == counter.get_total_flops() / (2 * seq_len)
    if (name, seq_len) == ("gpt2", 1024):
        assert flops_per_token(cfg, seq_len) == 854_438_400


def test_forward_shapes_tying_and_init():
    torch.manual_seed(0)
    model = GPT(TINY)
    assert model.lm_head.weight is model.transformer.wte.weight
    logits = model(torch.randint(0, 97, (3, 11)))
    assert logits.shape == (3, 11, 97) and logits.dtype == torch.float32
    big = GPT(GPTConfig(vocab_size=500, block_size=32, n_layer=8, n_head=4, n_embd=128))
    assert abs(big.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(big.transformer.h[0].mlp.c_proj.weight.std().item() - 0.02 / 4) < 0.0005
    assert torch.all(big.transformer.h[0].mlp.c_fc.bias == 0)


def test_loss_of_untrained_model_is_near_uniform():
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=1000, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    idx = torch.randint(0, 1000, (4, 32))
    loss = F.cross_entropy(model(idx)[:, :-1].reshape(-1, 1000), idx[:, 1:].reshape(-1))
    assert abs(loss.item() - math.log(1000)) < 0.1


def test_backward_reaches_every_parameter():
    torch.manual_seed(2)
    model = GPT(TINY)
    model(torch.randint(0, 97, (2, 8))).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_causality_and_too_long_input():
    torch.manual_seed(3)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 97, (1, 10))
    idx2 = idx.clone()
    idx2[0, 6] = (idx2[0, 6] + 1) % 97
    torch.testing.assert_close(model(idx)[:, :6], model(idx2)[:, :6])
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 25, dtype=torch.long))


@pytest.mark.parametrize("chunks", [[1] * 9, [5, 1, 3], [9]])
def test_kv_cache_incremental_equals_full(chunks):
    torch.manual_seed(4)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(forward_cached(model, idx, chunks), model(idx), atol=1e-5, rtol=1e-5)


def test_left_padding_matches_unpadded_rows_with_and_without_cache():
    torch.manual_seed(5)
    model = GPT(TINY).eval()
    a, b = torch.randint(1, 97, (1, 8)), torch.randint(1, 97, (1, 5))
    idx = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.tensor([[1] * 8, [0, 0, 0] + [1] * 5])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    full = model(idx, attention_mask=mask, position_ids=pos)
    torch.testing.assert_close(full[0], model(a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[1, 3:], model(b)[0], atol=1e-5, rtol=1e-5)
    cached = forward_cached(model, idx, [4, 1, 1, 2], attention_mask=mask, position_ids=pos)
    torch.testing.assert_close(cached[:, 3:], full[:, 3:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached[0], full[0], atol=1e-5, rtol=1e-5)


def test_dropout_is_active_only_in_training():
    torch.manual_seed(6)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.5))
    idx = torch.randint(0, 50, (2, 8))
    assert not torch.allclose(model(idx), model(idx))
    model.eval()
    torch.testing.assert_close(model(idx), model(idx))


def test_no_bias_variant():
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False))
    assert all(not name.endswith("bias") for name, _ in model.named_parameters())
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 50)


def test_package_never_imports_transformers():
    from book_tools.nbexport import ROOT

    for path in (ROOT / "gpt2_core").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import transformers" not in text and "from transformers" not in text, path
