"""gpt2_core.generate: parity with transformers (greedy, beam search, logits processors), KV cache,
batching with left padding, streaming, context overflow, and clear errors; and chapter 5's
playground (gpt2_core.playground)."""

import pytest
import torch

import gpt2_core.generate as generate_module
import gpt2_core.layout as layout_module
from gpt2_core.generate import (GenerationConfig, KVCache, LogitsProcessor, MinP, NoRepeatNGram, RepetitionPenalty,
                                Temperature, TopK, TopP, apply_processors, generate, left_pad, next_token_logits,
                                positions, stream)
from gpt2_core.layout import DecodeLinear, decode_layout
from gpt2_core.model import GPT, GPTConfig, from_pretrained

SHAPES = {  # name: (n_layer, n_head, n_embd, block_size, vocab_size)
    "tiny": (2, 2, 16, 48, 40),
    "wide": (3, 4, 32, 64, 97),
}


def random_prompts(vocab_size, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module", params=sorted(SHAPES))
def pair(request, tmp_path_factory, transformers_module):
    """The same random weights as a transformers GPT2LMHeadModel and a gpt2_core GPT."""
    transformers = transformers_module
    n_layer, n_head, n_embd, block_size, vocab_size = SHAPES[request.param]
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size,
                                  vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():   # larger than default weights: peaked, varied distributions
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    return hf, from_pretrained(directory)


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model(request):
    """A gpt2_core GPT with random weights of the same sizes, for tests that need no transformers."""
    n_layer, n_head, n_embd, block_size, vocab_size = SHAPES[request.param]
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                         n_head=n_head, n_embd=n_embd)).eval()
    with torch.no_grad():   # as in `pair`: peaked, varied distributions
        for p in ours.parameters():
            p.normal_(0.0, 0.3)
    return ours


def hf_generate(hf, prompts, pad, **kwargs):
    """transformers' generate on left-padded prompts; returns (new tokens, scores or None).
    Only tests that use `pair`, which skips without transformers, call it."""
    import transformers

    ids, mask = left_pad(prompts, pad)
    gen_config = transformers.GenerationConfig(do_sample=False, pad_token_id=pad, bos_token_id=pad,
                                               return_dict_in_generate=True, output_scores=True, **kwargs)
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config)
    scores = getattr(out, "sequences_scores", None)
    return out.sequences[:, ids.shape[1]:], scores


def frequent_token(ours, prompt, **options):
    """A token that decoding emits early: a stop token that actually stops something."""
    options.setdefault("max_new_tokens", 8)
    return generate(ours, prompt, **options).tokens[0, 2].item()


def test_greedy_matches_transformers(pair):
    hf, ours = pair
    V = ours.config.vocab_size
    prompts = random_prompts(V, [6, 3, 9, 1], seed=1)
    for stop in (None, frequent_token(ours, prompts[0])):
        stop_tokens = () if stop is None else (stop,)
        pad = V - 2 if stop is None else stop
        got = generate(ours, prompts, 12, stop_tokens=stop_tokens, pad_token_id=pad)
        want, _ = hf_generate(hf, prompts, pad, max_new_tokens=12, eos_token_id=stop)
        assert torch.equal(got.tokens, want)
        one_by_one = [generate(ours, p, 12, stop_tokens=stop_tokens, pad_token_id=pad).sequences[0]
                      for p in prompts]
        assert got.sequences == one_by_one


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping",
                         [(2, 1.0, False), (3, 0.5, True), (4, 2.0, False), (5, 1.5, True), (3, -1.0, False)])
def test_beam_search_matches_transformers(pair, num_beams, length_penalty, early_stopping):
    hf, ours = pair
    V = ours.config.vocab_size
    prompts = random_prompts(V, [5, 2, 8], seed=num_beams)
    options = dict(max_new_tokens=10, num_beams=num_beams, length_penalty=length_penalty,
                   early_stopping=early_stopping, num_return_sequences=num_beams)
    stop = frequent_token(ours, prompts[0], **options)
    got = generate(ours, prompts, stop_tokens=(stop,), pad_token_id=V - 2, **options)
    want, want_scores = hf_generate(hf, prompts, V - 2, eos_token_id=stop, **options)
    assert torch.equal(got.tokens, want)
    assert torch.allclose(got.scores, want_scores, atol=1e-4)
    assert any(stop in s for s in got.sequences), "the stop token should end some hypothesis"
    # The same prompts one at a time give the same n-best lists.
    for i, p in enumerate(prompts):
        alone = generate(ours, p, stop_tokens=(stop,), pad_token_id=V - 2, **options)
        assert alone.sequences == got.sequences[i * num_beams:(i + 1) * num_beams]
        assert torch.allclose(alone.scores, got.scores[i * num_beams:(i + 1) * num_beams], atol=1e-5)


def test_beam_without_cache_and_no_repeat(pair):
    hf, ours = pair
    V = ours.config.vocab_size
    prompt = random_prompts(V, [4])
    options = dict(max_new_tokens=9, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2,
                   repetition_penalty=1.3)
    with_cache = generate(ours, prompt, pad_token_id=V - 2, **options)
    without = generate(ours, prompt, pad_token_id=V - 2, use_cache=False, **options)
    want, want_scores = hf_generate(hf, prompt, V - 2, eos_token_id=None, **options)
    assert torch.equal(with_cache.tokens, want) and torch.equal(without.tokens, want)
    assert torch.allclose(with_cache.scores, want_scores, atol=1e-4)


def hf_processors(transformers):
    g = transformers.generation.logits_process
    return [
        (Temperature(0.7), g.TemperatureLogitsWarper(0.7)),
        (TopK(1), g.TopKLogitsWarper(1)),
        (TopK(7), g.TopKLogitsWarper(7)),
        (TopP(0.1), g.TopPLogitsWarper(0.1)),
        (TopP(0.9), g.TopPLogitsWarper(0.9)),
        (MinP(0.05), g.MinPLogitsWarper(0.05)),
        (MinP(0.3), g.MinPLogitsWarper(0.3)),
        (RepetitionPenalty(1.5), g.RepetitionPenaltyLogitsProcessor(1.5)),
        (RepetitionPenalty(0.8), g.RepetitionPenaltyLogitsProcessor(0.8)),
        (NoRepeatNGram(2), g.NoRepeatNGramLogitsProcessor(2)),
        (NoRepeatNGram(3), g.NoRepeatNGramLogitsProcessor(3)),
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_processors_match_transformers(transformers_module, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 100, generator=g) * 3
    ids = torch.randint(0, 10, (64, 12), generator=g)       # small alphabet: repeated n-grams
    for ours, theirs in hf_processors(transformers_module):
        got, want = ours(logits.clone(), ids), theirs(ids, logits.clone())
        assert torch.equal(torch.isinf(got), torch.isinf(want)), type(ours).__name__
        assert torch.allclose(got.softmax(-1), want.softmax(-1), atol=1e-6), type(ours).__name__
    # Composed in generate's order: the kept set shrinks and still sums to one.
    chain = GenerationConfig(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, min_p=0.02).processors()
    assert [type(p).__name__ for p in chain] == ["Temperature", "TopK", "TopP", "MinP"]
    kept = torch.isfinite(apply_processors(chain, logits)).sum(-1)
    assert (kept >= 1).all() and (kept <= 20).all()


def test_processors_respect_padding():
    logits = torch.randn(2, 30)
    ids, mask = left_pad([[3, 4, 3, 4, 3], [3, 5]], pad_token_id=7)
    banned = torch.isinf(NoRepeatNGram(2)(logits, ids, mask))
    assert banned[0].nonzero().flatten().tolist() == [4]      # "3 4" seen, last token 3
    assert not banned[1].any()                                 # padding 7s are not part of the text
    penalised = RepetitionPenalty(2.0)(logits, ids, mask)
    changed = (penalised != logits)
    assert changed[1].nonzero().flatten().tolist() == [3, 5]   # not the pad id 7


def test_cache_and_no_cache_agree(model):
    ours = model
    V = ours.config.vocab_size
    prompts = random_prompts(V, [7, 2, 5], seed=3)
    for options in (dict(), dict(do_sample=True, seed=5, top_k=10, temperature=1.3),
                    dict(repetition_penalty=1.2, no_repeat_ngram_size=3)):
        a = generate(ours, prompts, 15, **options)
        b = generate(ours, prompts, 15, use_cache=False, **options)
        assert torch.equal(a.tokens, b.tokens), options


def test_next_token_logits_equals_model_forward(model):
    ours = model
    ids, mask = left_pad(random_prompts(ours.config.vocab_size, [6, 3]), 0)
    with torch.no_grad():
        want = ours(ids, attention_mask=mask, position_ids=positions(mask))[:, -1]
        got = next_token_logits(ours, ids, mask, positions(mask), None)
    assert torch.allclose(got, want, atol=1e-6)


def test_kv_cache_step_equals_full_forward(model):
    ours = model
    c = ours.config
    ids = torch.tensor(random_prompts(c.vocab_size, [10]))
    cache = KVCache.for_model(ours, 1, 10)
    assert cache.nbytes == 2 * c.n_layer * 10 * c.n_embd * 4
    with torch.no_grad():
        full = ours(ids)
        first = ours(ids[:, :7], kv_cache=cache)
        assert cache.length == 7
        rest = [ours(ids[:, t:t + 1], kv_cache=cache) for t in range(7, 10)]
        assert cache.length == 10
        with pytest.raises(ValueError, match="KV cache is full"):
            ours(ids[:, :1], kv_cache=cache, position_ids=torch.zeros(1, 1, dtype=torch.long))
    assert torch.allclose(torch.cat([first] + rest, dim=1), full, atol=1e-5)


def test_sampling_is_seeded_and_stream_matches(model):
    ours = model
    prompt = random_prompts(ours.config.vocab_size, [4])[0]
    options = dict(do_sample=True, top_p=0.95, temperature=1.5)
    a = generate(ours, prompt, 20, seed=11, **options).sequences[0]
    assert a == generate(ours, prompt, 20, seed=11, **options).sequences[0]
    assert a != generate(ours, prompt, 20, seed=12, **options).sequences[0]
    assert list(stream(ours, prompt, 20, seed=11, **options)) == a
    # top_k=1 sampling is greedy decoding.
    assert generate(ours, prompt, 20, do_sample=True, top_k=1, seed=0).sequences == generate(ours, prompt, 20).sequences
    # num_return_sequences samples per prompt.
    many = generate(ours, [prompt, prompt[:2]], 6, do_sample=True, seed=1, num_return_sequences=3)
    assert many.tokens.shape == (6, 6)


def test_stop_tokens_end_rows_and_stream(model):
    ours = model
    prompt = random_prompts(ours.config.vocab_size, [5])[0]
    stop = frequent_token(ours, prompt)
    out = generate(ours, prompt, 12, stop_tokens=[stop])
    assert out.sequences[0][-1] == stop and stop not in out.sequences[0][:-1]
    assert list(stream(ours, prompt, 12, stop_tokens=[stop])) == out.sequences[0]


def test_overflow_error_and_sliding_window(model):
    ours = model
    block = ours.config.block_size
    prompt = random_prompts(ours.config.vocab_size, [block - 5])[0]
    with pytest.raises(ValueError, match="overflow='slide'"):
        generate(ours, prompt, 10)
    slid = generate(ours, prompt, 10, overflow="slide").sequences[0]
    assert slid == generate(ours, prompt, 10, overflow="slide", use_cache=False).sequences[0]
    ids = list(prompt)   # reference: always feed the last block_size tokens, recomputing everything
    with torch.no_grad():
        for _ in range(10):
            ids.append(ours(torch.tensor([ids[-block:]]))[0, -1].argmax().item())
    assert slid == ids[len(prompt):]
    batch = generate(ours, [prompt, prompt[-3:]], 10, overflow="slide")
    assert batch.sequences == [slid, generate(ours, prompt[-3:], 10, overflow="slide").sequences[0]]


def test_decode_layout_keeps_model_trainable():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))
    ids = torch.randint(0, 30, (2, 16))
    before = model(ids).detach()
    params = list(model.parameters())
    decode_layout(model)
    assert not model.lm_head.weight.is_contiguous() and model.lm_head.weight is model.transformer.wte.weight
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert torch.allclose(model(ids), before, atol=1e-6)
    model(ids).sum().backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad is not None


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 12), (2, 1, 12), (3, 5, 12), (33, 12), (2, 20, 12)])
def test_decode_linear_matches_linear(threads, bias, shape):
    """Split products (up to 32 rows; 12 inputs divide into 2 or 3 parts) and the F.linear fallback
    (one thread, or more than 32 rows) give nn.Linear's outputs and gradients (input and weight)."""
    torch.manual_seed(0)
    plain = torch.nn.Linear(12, 7, bias=bias)
    fast = decode_layout(torch.nn.Sequential(torch.nn.Linear(12, 7, bias=bias)))[0]
    with torch.no_grad():
        fast.weight.copy_(plain.weight)
        if bias:
            fast.bias.copy_(plain.bias)
    assert isinstance(fast, DecodeLinear) and not fast.weight.is_contiguous()
    x = torch.randn(*shape, requires_grad=True)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = fast(x)
        g, g_w = torch.autograd.grad(y.square().sum(), (x, fast.weight))
    finally:
        torch.set_num_threads(old)
    expected = plain(x)
    g_expected, g_w_expected = torch.autograd.grad(expected.square().sum(), (x, plain.weight))
    assert y.shape == expected.shape == (*shape[:-1], 7)
    assert torch.allclose(y, expected, atol=1e-6) and torch.allclose(g, g_expected, atol=1e-5)
    assert torch.allclose(g_w, g_w_expected, atol=1e-5)


def test_decode_linear_falls_back_when_the_threads_do_not_divide_the_input():
    torch.manual_seed(0)
    plain = torch.nn.Linear(10, 4)
    fast = decode_layout(torch.nn.Sequential(torch.nn.Linear(10, 4)))[0]
    fast.load_state_dict(plain.state_dict())          # copies values; the column-major storage stays
    assert not fast.weight.is_contiguous()
    old = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        x = torch.randn(1, 10)
        assert torch.allclose(fast(x), plain(x), atol=1e-6)
    finally:
        torch.set_num_threads(old)


def test_generate_does_not_modify_the_model_and_decode_layout_keeps_its_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    state = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    prompts = random_prompts(30, [5, 3])
    greedy = generate(model, prompts, 12).sequences
    beams = generate(model, prompts[0], 8, num_beams=3, num_return_sequences=2).sequences
    for k, v in model.state_dict().items():   # same values and the same storage layout
        assert torch.equal(v, state[k][0]) and v.stride() == state[k][1], k
    decode_layout(model)                     # the opt-in: changes strides, not tokens
    assert model.transformer.h[0].mlp.c_fc.weight.stride() != state["transformer.h.0.mlp.c_fc.weight"][1]
    assert generate(model, prompts, 12).sequences == greedy
    assert generate(model, prompts[0], 8, num_beams=3, num_return_sequences=2).sequences == beams


@pytest.mark.parametrize("options, message", [
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_k=0), "top_k"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(min_p=1.5), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_beams=2, do_sample=True), "deterministic"),
    (dict(num_return_sequences=2), "greedy"),
    (dict(overflow="wrap"), "overflow"),
    (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_invalid_options(options, message):
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=8))
    options.setdefault("max_new_tokens", 3)
    with pytest.raises(ValueError, match=message):
        generate(model, [1, 2], **options)


def test_invalid_prompts():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="empty"):
        generate(model, [], 2)
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1], []], 2)
    with pytest.raises(ValueError, match="outside"):
        generate(model, [1, 20], 2)
    with pytest.raises(ValueError, match="more than the model's context"):
        generate(model, list(range(9)), 1, overflow="slide")
    with pytest.raises(ValueError, match="stream"):
        stream(model, [[1], [2]], 2)
    with pytest.raises(TypeError, match="unknown generation options"):
        generate(model, [1], 2, topk=3)
    with pytest.raises(ValueError, match="temperature"):
        stream(model, [1], 2, do_sample=True, temperature=0)    # raised at the call, not at next()


@pytest.mark.parametrize("option, value, processor", [
    ("top_k", 0, "TopK"),
    ("top_p", 1.5, "TopP"),
    ("min_p", -0.1, "MinP"),
    ("temperature", 0.0, "Temperature"),
    ("repetition_penalty", 0.0, "RepetitionPenalty"),
    ("no_repeat_ngram_size", -1, "NoRepeatNGram"),
])
def test_each_processor_setting_is_checked_once_by_its_processor(monkeypatch, option, value, processor):
    """validate() leaves a processor's setting to the processor's own check: the error names
    the option and the bad value, and once the processor accepts the value, validate() does too
    (a second, duplicated check in validate() would still reject it)."""
    config = GenerationConfig(do_sample=True, **{option: value})
    with pytest.raises(ValueError, match=rf"^{option} .*got {value}"):
        config.validate()
    monkeypatch.setattr(generate_module, processor, lambda *args: LogitsProcessor())
    assert config.validate() is config


def test_sampling_filters_are_checked_whatever_the_strategy_but_applied_only_when_sampling():
    with pytest.raises(ValueError, match="top_k"):
        GenerationConfig(top_k=0).validate()                 # greedy, yet a bad top_k
    GenerationConfig(temperature=0.0).validate()             # temperature is unused when greedy
    greedy = GenerationConfig(top_k=3, top_p=0.5, min_p=0.1, temperature=0.5)
    assert greedy.processors() == []
    chain = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, min_p=0.0, top_k=3).processors()
    assert [type(p).__name__ for p in chain] == ["TopK"]     # the settings that change nothing are left out


# --- the playground (chapter 5) -----------------------------------------------------------------
class ByteTokenizer:
    """Enough of a tokenizer for the playground: one token per byte, and an end-of-text token."""

    eot_token = 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def byte_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():   # peaked, prompt-dependent distributions
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


@pytest.fixture()
def playground(byte_model):
    playground_module = pytest.importorskip("gpt2_core.playground")
    return playground_module.Playground(byte_model, ByteTokenizer(), prompt="To be", top_k=5, top_p=1.0,
                                       max_new=4)


def test_playground_chart_cuts_tokens_only_when_sampling(playground):
    view = playground.view
    assert view.sampling and view.n_kept == 5                # top-k = 5 of 257
    assert "5 of 257 tokens pass the filters" in playground.chart_title()
    for strategy in ("greedy", "beam search"):
        playground.strategy.value = strategy                 # the chart redraws for the new strategy
        assert not playground.view.sampling and bool(playground.view.kept.all()), strategy
        assert torch.allclose(playground.view.after, playground.view.probs)
        assert "no tokens cut" in playground.chart_title() and strategy in playground.chart_title()


def test_playground_chart_follows_the_prompt(playground):
    before, chart = playground.view.probs, playground.chart.value
    playground.prompt.value = "Not to be"
    assert not torch.allclose(playground.view.probs, before)
    assert playground.chart.value != chart


def test_playground_chart_greys_cut_tokens_and_has_readable_labels(playground):
    from gpt2_core.playground import chart_figure

    fig = chart_figure(playground.view, playground.tok, playground.chart_title())
    ax = fig.axes[0]
    grey = [bar.get_facecolor() for bar in ax.patches].count(matplotlib_color("lightgray"))
    assert grey == 30 - 5                                    # 30 bars, 5 kept by top-k
    labels = ax.get_xticklabels() + ax.get_yticklabels()
    assert len(ax.get_xticklabels()) == 30 and min(t.get_fontsize() for t in labels) >= 9


def matplotlib_color(name):
    from matplotlib.colors import to_rgba

    return to_rgba(name)


def test_playground_settings_are_checked(byte_model):
    from gpt2_core.playground import Playground

    with pytest.raises(TypeError, match="unknown setting 'top_q'"):
        Playground(byte_model, ByteTokenizer(), top_q=0.5)


# --- the tuned weight layout (tune_layout) and int8 weights (quantize_model) -------------------------------
@pytest.fixture
def forced_plans(monkeypatch):
    """A fresh PLANS table, so that a test can force each kernel in turn."""
    plans = {}
    monkeypatch.setattr(layout_module, "PLANS", plans)
    return plans


@pytest.mark.parametrize("kernel", sorted(layout_module.KERNELS))
def test_every_kernel_decodes_as_the_weights_as_stored(kernel, forced_plans):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=40, n_layer=2, n_head=2, n_embd=32)).eval()
    state = {k: (v.clone(), v.stride(), v.data_ptr()) for k, v in model.state_dict().items()}
    prompts = random_prompts(50, [6, 3])
    plain = generate(model, prompts, 10, tune_layout=False)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            forced_plans[layout_module.plan_key(m.weight)] = kernel
    tuned = generate(model, prompts, 10)
    assert tuned.sequences == plain.sequences
    assert list(stream(model, prompts[0], 10, do_sample=True, seed=3)) == \
        generate(model, prompts[0], 10, do_sample=True, seed=3, tune_layout=False).sequences[0]
    assert generate(model, prompts[0], 6, num_beams=3).sequences == \
        generate(model, prompts[0], 6, num_beams=3, tune_layout=False).sequences
    assert all(type(m) is not layout_module.TunedLinear for m in model.modules())   # restored
    for k, v in model.state_dict().items():   # the model's own tensors are untouched
        assert torch.equal(v, state[k][0]) and (v.stride(), v.data_ptr()) == state[k][1:], k


def test_tune_layout_measures_each_shape_once_per_process(forced_plans, monkeypatch):
    calls = []
    measure = layout_module.measure
    monkeypatch.setattr(layout_module, "measure", lambda modules: calls.append(len(modules)) or measure(modules))
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    plan = layout_module.tune_layout(model)
    assert set(plan) == {"48 x 16", "16 x 16", "64 x 16", "16 x 64", "50 x 16"}
    assert set(plan.values()) <= set(layout_module.KERNELS)
    assert sorted(calls) == [1, 2, 2, 2, 2]       # the head once, the other shapes once per layer
    layout_module.tune_layout(model)
    generate(GPT(model.config).eval(), [1, 2], 3)  # another model of the same shapes
    assert len(calls) == 5


def test_tuned_layers_train_exactly_as_nn_linear(forced_plans):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    forced_plans[layout_module.plan_key(layer.weight)] = "transposed, split"
    x = torch.randn(2, 16)
    with layout_module.tuned(torch.nn.Sequential(layer)):
        assert type(layer) is layout_module.TunedLinear
        y = layer(x)                                   # autograd on: exactly F.linear
        assert torch.equal(y, torch.nn.functional.linear(x, layer.weight, layer.bias))
        y.sum().backward()
        with torch.no_grad():                          # the tuned kernel: equal up to rounding
            assert torch.allclose(layer(x), y, atol=1e-6)
    assert type(layer) is torch.nn.Linear and layer.weight.grad is not None


def test_quantize_int8_is_symmetric_per_output_channel():
    torch.manual_seed(0)
    w = torch.randn(6, 20) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 0.5, 2.0])[:, None]
    w[5] = 0.0
    q, scale = generate_module.quantize_int8(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (6,)
    assert q[:5].abs().amax(dim=1).tolist() == [127] * 5 and q[5].abs().max() == 0
    error = (q.float() * scale[:, None] - w).abs()
    assert (error <= scale[:, None] * (0.5 + 1e-4)).all()          # at most half a step per weight
    assert torch.equal(generate_module.quantize_int8(-w)[0], -q)    # symmetric: no zero point


def test_quantize_model_replaces_every_linear_and_keeps_the_original():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = generate_module.quantize_model(model)
    layers = [m for m in int8.modules() if isinstance(m, generate_module.Int8Linear)]
    assert len(layers) == 4 * 2 + 1 and isinstance(int8.lm_head, generate_module.Int8Linear)
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.randn(3, 32)
    with torch.inference_mode():
        for layer in layers[:3]:
            reference = torch.nn.functional.linear(x, layer.dequantized(), layer.bias)
            assert ((layer(x) - reference).norm() / reference.norm()).item() < 0.03
        idx = torch.randint(0, 64, (2, 16))
        fp32, q = model(idx), int8(idx)
    assert ((q - fp32).norm() / fp32.norm()).item() < 0.05
    out = generate(int8, random_prompts(64, [5, 2]), 6)
    assert out.tokens.shape == (2, 6)
