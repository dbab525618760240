"""The training loop: schedule, optimiser groups, batches, evaluation, accumulation, resume."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt2_core.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.parallel import Parallel
from gpt2_core.runtime import seed_everything
from gpt2_core.train import (TrainConfig, batch_starts, configure_optimizer, evaluate_loss, get_batch, lr_at,
                             train)

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
TOKENS = np.random.default_rng(0).integers(0, 64, size=5000).astype(np.uint16)


def tiny_cfg(**overrides) -> TrainConfig:
    settings = dict(max_steps=12, batch_size=8, block_size=16, warmup_steps=3, eval_interval=0, lr=3e-3,
                    min_lr=3e-4)
    return TrainConfig(**{**settings, **overrides})


def fresh_model(seed: int = 0) -> GPT:
    seed_everything(seed)
    return GPT(TINY)


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(max_steps=1000, warmup_steps=100, lr=1e-3, min_lr=1e-4)
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps + 50)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[550] == pytest.approx(5.5e-4)                 # half way down the cosine
    assert lrs[1000] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-4)


def test_weight_decay_only_on_linear_matrices():
    model = fresh_model()
    optimizer = configure_optimizer(model, TrainConfig())
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names == {n for n, p in model.named_parameters()
                     if p.dim() == 2 and ("c_attn" in n or "c_fc" in n or "c_proj" in n)}
    assert id(model.lm_head.weight) not in decayed and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_batches_are_a_deterministic_function_of_the_step():
    cfg = tiny_cfg()
    a, b = batch_starts(5, len(TOKENS), cfg), batch_starts(5, len(TOKENS), cfg)
    assert torch.equal(a, b) and not torch.equal(a, batch_starts(6, len(TOKENS), cfg))
    assert a.min() >= 0 and a.max() <= len(TOKENS) - cfg.block_size - 1
    x, y = get_batch(TOKENS, a, cfg.block_size)
    assert x.shape == y.shape == (cfg.batch_size, cfg.block_size) and x.dtype == torch.int64
    start = int(a[0])
    assert x[0].tolist() == TOKENS[start:start + 16].tolist()
    assert y[0].tolist() == TOKENS[start + 1:start + 17].tolist()


def test_evaluate_scores_every_token_once():
    model = fresh_model().eval()
    tokens = TOKENS[:100]
    total, count = evaluate_loss(model, tokens, block_size=16, batch_size=3)
    assert count == len(tokens) - 1
    expected = 0.0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, 16):
            x = torch.from_numpy(tokens[start:start + 16].astype(np.int64))
            y = torch.from_numpy(tokens[start + 1:start + 17].astype(np.int64))
            x = x[: len(y)]
            expected += F.cross_entropy(model(x[None])[0], y, reduction="sum").item()
    assert total == pytest.approx(expected, rel=1e-5)


def test_untrained_loss_is_near_log_vocab_and_training_lowers_it():
    model = fresh_model()
    cfg = tiny_cfg(max_steps=60, lr=1e-2, min_lr=1e-3)
    periodic = np.tile(np.arange(64, dtype=np.uint16), 80)         # a perfectly predictable text
    log = train(model, periodic, periodic, cfg)
    assert abs(log[0]["loss"] - math.log(64)) < 0.3
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]


def test_gradient_accumulation_matches_the_whole_batch():
    cfg = tiny_cfg(max_steps=5)
    no_dropout = GPTConfig(**{**TINY.__dict__, "dropout": 0.0})
    seed_everything(0)
    whole_model = GPT(no_dropout)
    whole = train(whole_model, TOKENS, TOKENS, cfg)
    seed_everything(0)
    accumulated_model = GPT(no_dropout)
    accumulated = train(accumulated_model, TOKENS, TOKENS, tiny_cfg(max_steps=5, grad_accum_steps=4))
    assert [r["loss"] for r in accumulated] == pytest.approx([r["loss"] for r in whole], abs=1e-5)
    for a, b in zip(whole_model.parameters(), accumulated_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_periodic_evaluation_is_logged():
    log = train(fresh_model(), TOKENS, TOKENS, tiny_cfg(eval_interval=5, eval_batches=2))
    assert [r["step"] for r in log if "val_loss" in r] == [5, 10, 12]


def test_resume_is_bit_exact(tmp_path):
    cfg = tiny_cfg(checkpoint_interval=4)
    straight_model = fresh_model(1)
    straight = train(straight_model, TOKENS, TOKENS, cfg)
    first = train(fresh_model(1), TOKENS, TOKENS, cfg, out_dir=tmp_path, stop_at=6)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-0000004", "ckpt-0000006"]
    assert len(first) == 6
    resumed_model = fresh_model(12345)
    resumed = train(resumed_model, TOKENS, TOKENS, cfg, out_dir=tmp_path, resume=True)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert latest_checkpoint(tmp_path).name == "ckpt-0000012"


def test_corrupt_or_incomplete_checkpoints_are_refused(tmp_path):
    train(fresh_model(), TOKENS, TOKENS, tiny_cfg(max_steps=2), out_dir=tmp_path)
    checkpoint = latest_checkpoint(tmp_path)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        train(fresh_model(), TOKENS, TOKENS, tiny_cfg(max_steps=2), out_dir=tmp_path)
    (tmp_path / ".tmp-ckpt-0000009-x").mkdir()                # a crash mid-write leaves only this
    assert latest_checkpoint(tmp_path) == checkpoint
    optimizer_file = checkpoint / "optimizer.safetensors"
    optimizer_file.write_bytes(optimizer_file.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="optimizer.safetensors is corrupt or truncated"):
        load_checkpoint(checkpoint, model=fresh_model())
    optimizer_file.unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing"):
        load_checkpoint(checkpoint, model=fresh_model())
    (checkpoint / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="state.json: invalid JSON at line 1"):
        load_checkpoint(checkpoint, model=fresh_model())
    (checkpoint / "state.json").unlink()
    with pytest.raises(CheckpointError, match="state.json is missing"):
        load_checkpoint(checkpoint, model=fresh_model())


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    train(fresh_model(), TOKENS, TOKENS, tiny_cfg(max_steps=1), out_dir=tmp_path)
    other = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['transformer.h.1"):
        load_checkpoint(latest_checkpoint(tmp_path), model=other)


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=10, grad_accum_steps=4), "not divisible"),
    (dict(lr=1e-4, min_lr=1e-3), "min_lr <= lr"),
    (dict(dtype="float16"), "dtype must be"),
    (dict(max_steps=0), "max_steps must be at least 1"),
])
def test_bad_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


@pytest.mark.parametrize("overrides", [dict(dtype="bfloat16"), dict(compile=True)])
def test_the_default_runner_refuses_what_only_parallel_does(overrides):
    with pytest.raises(ValueError, match="need gpt2_core.parallel.Parallel"):
        train(fresh_model(), TOKENS, TOKENS, tiny_cfg(**overrides))


def test_parallel_on_one_process_is_the_default_runner_bit_for_bit(tmp_path):
    """One process, float32, an array: Parallel's batches, losses and weights are OneProcess's."""
    cfg = tiny_cfg(grad_accum_steps=2, eval_interval=6)
    plain_model, parallel_model = fresh_model(), fresh_model()
    seed_everything(1)                               # dropout draws the same masks in both runs
    plain = train(plain_model, TOKENS, TOKENS, cfg)
    seed_everything(1)
    parallel = train(parallel_model, TOKENS, TOKENS, cfg, runner=Parallel(), out_dir=tmp_path)
    assert [r["loss"] for r in parallel] == [r["loss"] for r in plain]
    assert [r.get("val_loss") for r in parallel] == [r.get("val_loss") for r in plain]
    assert all(torch.equal(a, b) for a, b in zip(plain_model.parameters(), parallel_model.parameters()))
    state = load_checkpoint(latest_checkpoint(tmp_path), model=fresh_model())
    assert "data" not in state["extra"]              # random offsets: no reader position to keep
