"""Chapter 8's DPO: the loss against hand-computed values, the masked log-probability against a
per-token loop, the gradient's direction, config errors, and the command line's run record."""

import json
import math
from pathlib import Path

import pytest
import torch

from gpt2_core.cli import main
from gpt2_core.instruct import Example
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.preference import (
    PREFERENCE_KIND,
    PairsConfig,
    PreferenceConfig,
    dpo_loss,
    implicit_reward,
    pair_logprobs,
    sequence_logprob,
    train_dpo,
)
from gpt2_core.runs import Run
from gpt2_core.train import TrainConfig

EOT = 0
TINY = GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16)


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY).eval()


def dpo_by_hand(pc: float, pr: float, rc: float, rr: float, beta: float) -> float:
    """-log sigmoid(beta * ((pc - rc) - (pr - rr))), written out with math."""
    margin = beta * ((pc - rc) - (pr - rr))
    return math.log(1 + math.exp(-margin))


@pytest.mark.parametrize("pc, pr, rc, rr, beta", [
    (-10.0, -14.0, -11.0, -13.0, 1.0),       # margin 2: log(1 + e^-2) = 0.126928
    (-3.0, -2.0, -5.0, -1.0, 0.1),           # margin 0.1 * (2 + 1) = 0.3
    (-7.5, -7.5, -2.0, -9.0, 0.5),           # the policy moved the wrong way: margin -3.5
])
def test_dpo_loss_matches_a_hand_computation(pc, pr, rc, rr, beta):
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    loss, margin = dpo_loss(t(pc), t(pr), t(rc), t(rr), beta)
    assert loss.item() == pytest.approx(dpo_by_hand(pc, pr, rc, rr, beta), rel=1e-12)
    assert margin.item() == pytest.approx(beta * ((pc - rc) - (pr - rr)), rel=1e-12)
    assert implicit_reward(t(pc), t(rc), beta).item() == pytest.approx(beta * (pc - rc))


def test_the_first_case_by_its_constants():
    loss, _ = dpo_loss(*(torch.tensor([v]) for v in (-10.0, -14.0, -11.0, -13.0)), 1.0)
    assert loss.item() == pytest.approx(0.126928, abs=1e-6)


def test_a_batch_loss_is_the_mean_of_its_pairs():
    values = [(-1.0, -2.0, -1.5, -1.0), (-4.0, -3.0, -4.0, -3.5)]
    columns = [torch.tensor(c, dtype=torch.float64) for c in zip(*values)]
    loss, margin = dpo_loss(*columns, 0.5)
    assert margin.shape == (2,)
    assert loss.item() == pytest.approx(sum(dpo_by_hand(*v, 0.5) for v in values) / 2)


def examples() -> list[tuple[Example, Example]]:
    """Two pairs of different lengths and prompt lengths, ending with EOT."""
    return [(Example([5, 6, 7, 8, 9, EOT], n_prompt=3), Example([5, 6, 7, 3, EOT], n_prompt=3)),
            (Example([1, 2, 11, EOT], n_prompt=2), Example([1, 2, 12, 13, 14, 15, EOT], n_prompt=2))]


def test_sequence_logprob_is_the_sum_over_the_response_tokens():
    model = tiny_gpt()
    flat = [ex for pair in examples() for ex in pair]
    with torch.no_grad():
        batched = sequence_logprob(model, flat, pad_id=EOT)
        for b, ex in enumerate(flat):
            logp = torch.log_softmax(model(torch.tensor([ex.ids[:-1]])), dim=-1)[0]
            by_hand = sum(logp[t - 1, ex.ids[t]].item() for t in range(ex.n_prompt, len(ex.ids)))
            assert batched[b].item() == pytest.approx(by_hand, abs=1e-5)
    assert batched.shape == (len(flat),)


def test_the_loss_is_log_2_when_the_policy_is_the_reference():
    policy, reference = tiny_gpt(), tiny_gpt()
    with torch.no_grad():
        chosen, rejected = pair_logprobs(policy, examples(), pad_id=EOT)
        ref_chosen, ref_rejected = pair_logprobs(reference, examples(), pad_id=EOT)
    loss, margin = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, 0.3)
    assert torch.all(margin == 0) and loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_one_step_raises_the_chosen_and_lowers_the_rejected(one_thread):
    policy, reference = tiny_gpt(), tiny_gpt().requires_grad_(False)
    pairs = examples()
    with torch.no_grad():
        chosen0, rejected0 = pair_logprobs(policy, pairs, pad_id=EOT)
    cfg = TrainConfig(max_steps=1, batch_size=2, block_size=16, lr=1e-2, min_lr=1e-3,
                      warmup_steps=0, weight_decay=0.0, eval_interval=0)
    log = train_dpo(policy, reference, pairs, cfg, beta=1.0, pad_id=EOT)
    with torch.no_grad():
        chosen1, rejected1 = pair_logprobs(policy, pairs, pad_id=EOT)
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert torch.all(chosen1 > chosen0) and torch.all(rejected1 < rejected0)
    assert not policy.training


@pytest.mark.parametrize("make, message", [
    (lambda: PreferenceConfig(base="x", beta=0.0), "beta must be a positive number, got 0.0"),
    (lambda: PreferenceConfig(base="x", beta=math.inf), "beta must be a positive number"),
    (lambda: PairsConfig(answer_tokens=0, test_rounds=0), "need at least 1: answer_tokens=0, test_rounds=0"),
    (lambda: PairsConfig(synthetic_train=-1), "synthetic_train must be >= 0, got -1"),
    (lambda: PairsConfig(temperature=0.0), "temperature must be positive, got 0.0"),
])
def test_bad_configs_are_named(make, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        make()


@pytest.mark.parametrize("values, message", [
    ({"beta": 0}, "bad.json: invalid config: beta must be a positive number, got 0.0"),
    ({"pairs": {"temperature": -1}}, "bad.json: invalid pairs: temperature must be positive"),
    ({"pairs": {"rounds": 2}}, "bad.json: unknown key 'pairs.rounds'"),
])
def test_the_command_line_names_bad_config_files(tmp_path, capsys, values, message):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(values))
    assert main(["finetune-preference", "some-run", "--config", str(config),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "run").exists()


@pytest.fixture
def tiny_base(tmp_path, mirror) -> Path:
    """A tiny language model with a 256-token context and its own BPE (a pretrain run)."""
    config = {"dataset": "the-verdict", "vocab_size": 300,
              "model": {"vocab_size": 300, "block_size": 256, "n_layer": 1, "n_head": 2, "n_embd": 16},
              "train": {"max_steps": 2, "batch_size": 2, "block_size": 32, "warmup_steps": 1,
                        "eval_interval": 0, "eval_batches": 1}}
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    assert main(["pretrain", "--config", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "base")]) == 0
    return tmp_path / "base"


def test_finetune_preference_writes_the_run_record(tiny_base, tmp_path, capsys, one_thread):
    # near-uniform samples of 32 tokens end with <|endoftext|> about one time in ten
    small = {"train": {"batch_size": 2}, "pairs": {
        "instruction_prompts": 60, "synthetic_train": 1, "synthetic_test": 1, "answer_tokens": 32,
        "temperature": 50.0, "test_rounds": 1}}
    (tmp_path / "small.json").write_text(json.dumps(small))
    out = tmp_path / "dpo"
    assert main(["finetune-preference", str(tiny_base), "--out", str(out), "--config",
                 str(tmp_path / "small.json"), "--max-steps", "3", "--beta", "0.5"]) == 0
    assert "held-out pairs: reward accuracy" in capsys.readouterr().out
    run = Run.open(out)
    assert run.kind == PREFERENCE_KIND and run.config["beta"] == 0.5
    assert run.config["train"]["max_steps"] == 3 and run.config["pairs"]["instruction_prompts"] == 60
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "eval.json",
                                                     "metrics.jsonl", "model", "test_responses.json",
                                                     "tokenizer.json"]
    metrics = run.metrics()
    assert [r["step"] for r in metrics] == [1, 2, 3]
    assert {"loss", "reward_margin", "reward_accuracy", "grad_norm", "lr", "elapsed_s"} <= set(metrics[0])
    assert metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    evaluations = run.evaluations
    assert sorted(evaluations) == ["held-out pairs", "rule-checked", "test split"]
    pairs, test = evaluations["held-out pairs"], evaluations["test split"]
    assert pairs["pairs"] >= 1 and 0 <= pairs["reward_accuracy"] <= 1
    assert pairs["reward_accuracy_base"] == 0 and test["kl_from_reference_base"] == 0
    assert test["examples"] == 110 and test["kl_from_reference"] > 0
    assert evaluations["rule-checked"]["items"] == 4
    assert len(run.read_json("test_responses.json")) == 110
    assert sorted(p.name for p in run.model_dir.iterdir()) == ["README.md", "config.json",
                                                               "model.safetensors", "tokenizer.json"]
    assert "preference-tuned" in (out / "README.md").read_text()
