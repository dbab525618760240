"""Sliding-window evaluation: every token scored once, with the context the stride promises."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_core.evaluate import TextScore, score_text, token_nlls, window_plan
from gpt2_core.model import GPT, GPTConfig, save_pretrained
from gpt2_core.tokenizer import BPETokenizer
from gpt2_core.train import evaluate_loss


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)).eval()


@given(n=st.integers(1, 200), context=st.integers(1, 40), data=st.data())
@settings(max_examples=200, deadline=None)
def test_window_plan_scores_every_target_once(n, context, data):
    stride = data.draw(st.integers(1, context))
    T = min(context, n)
    scored = []
    plan = window_plan(n, context, stride)
    assert plan[0] == (0, T)
    for start, new in plan:
        assert 0 <= start and start + T <= n and 1 <= new <= T
        scored += range(start + T - new, start + T)
    assert all(new <= stride for _, new in plan[1:])       # so each scored target sees >= T - stride tokens
    assert scored == list(range(n))


def test_window_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least two tokens"):
        window_plan(0, 4, 2)
    with pytest.raises(ValueError, match="stride must be in 1..context=4, got 5"):
        window_plan(10, 4, 5)
    with pytest.raises(ValueError, match="got 0"):
        window_plan(10, 4, 0)


def brute_force(model: GPT, ids: list[int], context: int) -> torch.Tensor:
    """Each target in its own forward pass over at most `context` preceding tokens."""
    out = []
    with torch.no_grad():
        for t in range(len(ids) - 1):
            window = torch.tensor([ids[max(0, t + 1 - context): t + 1]])
            out.append(F.cross_entropy(model(window)[0, -1], torch.tensor(ids[t + 1])))
    return torch.stack(out)


def test_stride_one_equals_brute_force(model):
    ids = torch.randint(0, 300, (50,), generator=torch.Generator().manual_seed(1)).tolist()
    torch.testing.assert_close(token_nlls(model, ids, stride=1, batch_size=7), brute_force(model, ids, 16),
                               atol=1e-5, rtol=1e-5)


def test_fixed_windows_equal_train_evaluate_loss(model):
    ids = np.random.default_rng(2).integers(0, 300, 16 * 5 + 1).astype(np.uint16)   # whole windows only
    total, count = evaluate_loss(model, ids, block_size=16)
    nll = token_nlls(model, ids)
    assert len(nll) == count
    assert math.isclose(nll.double().sum().item(), total, rel_tol=1e-5)


def test_short_text_and_batches_do_not_change_scores(model):
    ids = list(range(1, 11))                                           # shorter than the context
    assert len(token_nlls(model, ids)) == 9
    ids = torch.randint(0, 300, (70,), generator=torch.Generator().manual_seed(3)).tolist()
    torch.testing.assert_close(token_nlls(model, ids, stride=4, batch_size=1),
                               token_nlls(model, ids, stride=4, batch_size=64))


def test_smaller_context_or_stride_checked(model):
    with pytest.raises(ValueError, match="longer than the model's block_size=16"):
        token_nlls(model, [1, 2, 3], context=17)
    with pytest.raises(ValueError, match="at least two tokens"):
        token_nlls(model, [1])


def test_agrees_with_transformers(model, tmp_path):
    transformers = pytest.importorskip("transformers")
    save_pretrained(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        hf_loss = hf(ids, labels=ids).loss.item()
    assert math.isclose(token_nlls(model, ids[0]).mean().item(), hf_loss, rel_tol=1e-5)


def test_score_text_of_a_uniform_model_by_hand():
    """All-zero weights: uniform over 512 tokens, exactly 9 bits for every predicted token."""
    model = GPT(GPTConfig(vocab_size=512, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    tokenizer = BPETokenizer.train("abc", vocab_size=257)     # no merges: one token per byte
    score = score_text(model, tokenizer, "naïve café", stride=3)
    # 10 characters in 12 bytes (ï and é take two); the first token, "n", is not predicted
    assert (score.tokens, score.characters, score.bytes) == (11, 9, 11)
    assert score.nll == pytest.approx(11 * 9 * math.log(2), rel=1e-6)
    assert score.loss == pytest.approx(9 * math.log(2), rel=1e-6)
    assert score.perplexity == pytest.approx(512, rel=1e-5)
    assert score.bits_per_char == pytest.approx(99 / 9, rel=1e-6)
    assert score.bits_per_byte == pytest.approx(9.0, rel=1e-6)


def test_score_text_counts_characters_and_bytes(model):
    text = "Ünïcödé and plain text, naïve café — " * 3
    tokenizer = BPETokenizer.train(text, vocab_size=300)
    score = score_text(model, tokenizer, text, stride=1)
    ids = tokenizer.encode(text)
    predicted = tokenizer.decode_bytes(ids[1:])             # what the scored tokens spell
    assert score.tokens == len(ids) - 1 > 16
    assert score.characters == len(predicted.decode()) and score.bytes == len(predicted)
    assert score.bytes > score.characters
    nll = brute_force(model, ids, 16).double().sum().item()
    assert math.isclose(score.nll, nll, rel_tol=1e-5)
    assert math.isclose(score.bits_per_char, nll / math.log(2) / len(predicted.decode()),
                        rel_tol=1e-5)


def test_text_score_rates():
    s = TextScore(nll=10 * math.log(2), tokens=5, characters=20, bytes=25)
    assert s.loss == pytest.approx(2 * math.log(2)) and s.perplexity == pytest.approx(4.0)
    assert s.bits_per_char == pytest.approx(0.5) and s.bits_per_byte == pytest.approx(0.4)
    assert set(s.as_dict()) == {"tokens", "characters", "bytes", "loss", "perplexity", "bits_per_char",
                                "bits_per_byte"}
