"""gpt2_core.attention: CausalSelfAttention against a plain reference, masks, cache, dropout."""

import math

import pytest
import torch
import torch.nn.functional as F

from gpt2_core.attention import CausalSelfAttention, causal_mask


def reference_attention(attn: CausalSelfAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d) masked) V, head by head with explicit loops, then c_proj."""
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).split(C, dim=-1)
    hd = C // attn.n_head
    out = torch.zeros(B, T, C)
    for b in range(B):
        for h in range(attn.n_head):
            sl = slice(h * hd, (h + 1) * hd)
            scores = q[b, :, sl] @ k[b, :, sl].T / math.sqrt(hd)
            scores = scores.masked_fill(~allowed[b], float("-inf"))
            out[b, :, sl] = torch.softmax(scores, -1) @ v[b, :, sl]
    return attn.c_proj(out)


class ListCache:
    def __init__(self):
        self.k, self.v = [], []

    @property
    def length(self):
        return self.k[0].shape[2] if self.k else 0

    def update(self, layer_idx, k, v):
        if layer_idx == len(self.k):
            self.k.append(k)
            self.v.append(v)
        else:
            self.k[layer_idx] = torch.cat([self.k[layer_idx], k], dim=2)
            self.v[layer_idx] = torch.cat([self.v[layer_idx], v], dim=2)
        return self.k[layer_idx], self.v[layer_idx]


@pytest.mark.parametrize("n_embd,n_head,T", [(8, 1, 1), (8, 2, 5), (12, 3, 7), (32, 4, 16)])
def test_matches_reference_on_fast_path(n_embd, n_head, T):
    torch.manual_seed(n_embd + T)
    attn = CausalSelfAttention(n_embd, n_head).eval()
    x = torch.randn(2, T, n_embd)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool)).expand(2, T, T)
    y = attn(x)
    assert y.shape == (2, T, n_embd)
    torch.testing.assert_close(y, reference_attention(attn, x, allowed), atol=1e-5, rtol=1e-5)


def test_causal_mask_offsets_by_cached_tokens():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(causal_mask(4, 4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))


def test_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, 4).eval()
    x = torch.randn(1, 6, 16)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)
    torch.testing.assert_close(attn(x)[:, :4], attn(x2)[:, :4])
    assert not torch.allclose(attn(x)[:, 4:], attn(x2)[:, 4:])


def test_padding_mask_matches_reference_and_unpadded_run():
    torch.manual_seed(1)
    attn = CausalSelfAttention(16, 2).eval()
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    y = attn(x, attention_mask=mask)
    assert torch.isfinite(y).all()
    allowed = torch.tril(torch.ones(6, 6, dtype=torch.bool)) & mask[:, None, :].bool()
    ref = reference_attention(attn, x, allowed)
    torch.testing.assert_close(y[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1, 3:], ref[1, 3:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1:, 3:], attn(x[1:, 3:]), atol=1e-5, rtol=1e-5)


def test_all_ones_mask_equals_fast_path():
    torch.manual_seed(2)
    attn = CausalSelfAttention(8, 2).eval()
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(attn(x, attention_mask=torch.ones(3, 5)), attn(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("chunks", [[1] * 7, [3, 1, 3], [4, 3], [7]])
def test_kv_cache_incremental_equals_full(chunks):
    torch.manual_seed(3)
    attn = CausalSelfAttention(16, 4, layer_idx=0).eval()
    x = torch.randn(2, sum(chunks), 16)
    cache, outs, start = ListCache(), [], 0
    for n in chunks:
        outs.append(attn(x[:, start:start + n], kv_cache=cache))
        start += n
    assert cache.length == sum(chunks)
    torch.testing.assert_close(torch.cat(outs, 1), attn(x), atol=1e-5, rtol=1e-5)


def test_kv_cache_with_padding_mask():
    torch.manual_seed(4)
    attn = CausalSelfAttention(8, 2).eval()
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    full = attn(x, attention_mask=mask)
    cache = ListCache()
    first = attn(x[:, :4], attention_mask=mask[:, :4], kv_cache=cache)
    rest = [attn(x[:, t:t + 1], attention_mask=mask[:, :t + 1], kv_cache=cache) for t in (4, 5)]
    inc = torch.cat([first] + rest, dim=1)
    torch.testing.assert_close(inc[0, 2:], full[0, 2:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inc[1], full[1], atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(5)
    attn = CausalSelfAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 8, 16)
    attn.train()
    assert not torch.allclose(attn(x), attn(x))
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    plain = CausalSelfAttention(16, 4, dropout=0.0)
    plain.load_state_dict(attn.state_dict())
    torch.testing.assert_close(attn(x), plain.eval()(x))


def test_matches_sdpa_with_explicit_mask_and_names():
    attn = CausalSelfAttention(8, 2, bias=False)
    assert attn.c_attn.weight.shape == (24, 8) and attn.c_attn.bias is None
    assert attn.c_proj.weight.shape == (8, 8) and attn.n_head == 2 and attn.n_embd == 8
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(5, 5)),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        CausalSelfAttention(10, 3)
    attn = CausalSelfAttention(8, 2)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        attn(torch.randn(2, 4, 8), attention_mask=torch.ones(2, 5))
