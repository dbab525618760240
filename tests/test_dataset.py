"""Sliding-window next-token data: windows, stride, the one-token shift, and loader determinism."""

import pytest
import torch

from gpt2_core.dataset import SlidingWindowDataset, create_dataloader
from gpt2_core.tokenizer import BPETokenizer, gpt2_tokenizer


def brute_force_windows(ids, context_length, stride):
    starts = [s for s in range(0, len(ids), stride) if s + context_length + 1 <= len(ids)]
    return [(ids[s:s + context_length], ids[s + 1:s + context_length + 1]) for s in starts]


@pytest.mark.parametrize("n, context_length, stride", [
    (20, 4, 4), (20, 4, 1), (20, 4, 2), (21, 4, 4), (5, 4, 1), (100, 7, 10), (50, 1, 3),
])
def test_windows_match_brute_force(n, context_length, stride):
    ids = list(range(1000, 1000 + n))
    ds = SlidingWindowDataset(ids, context_length, stride)
    expected = brute_force_windows(ids, context_length, stride)
    assert len(ds) == len(expected)
    for i, (x, y) in enumerate(expected):
        got_x, got_y = ds[i]
        assert got_x.dtype == torch.long and got_x.shape == (context_length,)
        assert got_x.tolist() == x and got_y.tolist() == y
    assert ds[-1][0].tolist() == expected[-1][0]


def test_targets_are_inputs_shifted_by_one():
    ids = gpt2_tokenizer().encode("In the beginning the Universe was created. " * 10)
    ds = SlidingWindowDataset(ids, context_length=8, stride=3)
    for x, y in ds:
        assert torch.equal(x[1:], y[:-1])


def test_stride_defaults_to_context_length_and_accepts_tensors():
    ids = torch.arange(41)
    ds = SlidingWindowDataset(ids, context_length=10)
    assert ds.stride == 10 and len(ds) == 4
    assert ds[3][1].tolist() == list(range(31, 41))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(ids=list(range(4)), context_length=4), ValueError, "need at least context_length \\+ 1 = 5 tokens"),
    (dict(ids=list(range(10)), context_length=0), ValueError, "context_length must be a positive int, got 0"),
    (dict(ids=list(range(10)), context_length=4, stride=-2), ValueError, "stride must be a positive int, got -2"),
    (dict(ids=list(range(10)), context_length=4.0), ValueError, "context_length must be a positive int, got 4.0"),
    (dict(ids="some text", context_length=4), TypeError, "got a str"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        SlidingWindowDataset(**kwargs)


def test_index_out_of_range():
    ds = SlidingWindowDataset(list(range(10)), 4)
    with pytest.raises(IndexError, match="window 2 out of range for 2 windows"):
        ds[2]


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_dataloader_is_deterministic_given_a_seed():
    ids = list(range(500))
    a = batches(create_dataloader(ids, batch_size=4, context_length=8, seed=3))
    b = batches(create_dataloader(ids, batch_size=4, context_length=8, seed=3))
    c = batches(create_dataloader(ids, batch_size=4, context_length=8, seed=4))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    # a shuffled epoch: distinct windows, all but the (62 % 4 = 2) dropped by drop_last
    starts = [x[0].item() for batch, _ in a for x in batch]
    assert len(set(starts)) == len(starts) == 60 and set(starts) <= set(range(0, 62 * 8, 8))
    assert starts != sorted(starts)


def test_dataloader_shapes_order_and_drop_last():
    ids = list(range(101))  # 12 windows of 8 tokens (100 // 8), batches of 5
    loader = create_dataloader(ids, batch_size=5, context_length=8, shuffle=False, drop_last=True)
    got = batches(loader)
    assert len(got) == 2 and all(x.shape == y.shape == (5, 8) for x, y in got)
    assert got[0][0][:, 0].tolist() == [0, 8, 16, 24, 32]
    kept = batches(create_dataloader(ids, batch_size=5, context_length=8, shuffle=False, drop_last=False))
    assert [x.shape[0] for x, _ in kept] == [5, 5, 2]


def test_dataloader_from_text_uses_the_tokenizer():
    text = "It was a bright cold day in April, and the clocks were striking thirteen.<|endoftext|>" * 5
    tok = BPETokenizer.train(text, vocab_size=270)
    from_text = batches(create_dataloader(text, tokenizer=tok, batch_size=2, context_length=6, seed=1))
    from_ids = batches(create_dataloader(tok.encode(text, allowed_special="all"), batch_size=2,
                                         context_length=6, seed=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(from_text, from_ids)) and len(from_text) == len(from_ids)
    default = batches(create_dataloader(text, batch_size=2, context_length=6, shuffle=False))
    assert default[0][0][0].tolist() == gpt2_tokenizer().encode(text, allowed_special="all")[:6]
    with pytest.raises(TypeError, match="tokenizer is only used for text"):
        create_dataloader([1, 2, 3], tokenizer=tok)
